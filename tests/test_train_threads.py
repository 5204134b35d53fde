"""The core's data parallelism on threads (minilooped/training/threads.py).

The batch split across threads must give the step of the whole batch: the same loss and
gradients up to the order of float additions, the same evaluation loss, repeatable runs
(dropout included), errors from a worker thread raised in the caller, and BLAS's thread
count given back at the end. Exact resume with threads is in test_train_resume.py.
"""
import numpy as np
import pytest

import minilooped as ml
from minilooped.training import ConfigError, TrainConfig
from minilooped.training.ddp import DistInfo
from minilooped.training.engine_core import CoreEngine
from minilooped.training.threads import ThreadedDataParallel, blas_threads, resolve_threads


def _engine(threads: int, dropout: float = 0.0, batch_size: int = 6, model: str = "shakespeare-loop-residual",
            **model_args):
    cfg = TrainConfig(model=model, batch_size=batch_size, threads=threads, progress=False, seed=3,
                      model_args={"n_embd": 32, "n_head": 2, "n_loops": 2, "block_size": 16, "vocab_size": 40,
                                  "dropout": dropout, **model_args})
    return CoreEngine(cfg, cfg.model_config(), DistInfo(device="cpu"))


def _batch(batch_size: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 40, size=(batch_size, 16))
    return x, np.roll(x, -1, axis=1)


def _grads(engine):
    return {n: p.grad.copy() for n, p in engine.model.named_parameters()}


@pytest.mark.parametrize("threads", [2, 3, 4])  # 3 threads: shards of 2 sequences; 4: of 2, 1, 2, 1
def test_threads_give_the_whole_batch_step(threads):
    one, many = _engine(1), _engine(threads)
    assert many.parallel is not None and many.parallel.threads == threads
    x, y = _batch()
    one.forward_backward(x, y, None, scale=0.5, sync=True)
    many.forward_backward(x, y, None, scale=0.5, sync=True)
    assert many.collect_loss(None) == pytest.approx(one.collect_loss(None), rel=1e-6)
    g1, g2 = _grads(one), _grads(many)
    for name in g1:
        np.testing.assert_allclose(g2[name], g1[name], rtol=1e-4, atol=1e-7, err_msg=name)
    # and a second micro-batch accumulates on top, as with one thread
    one.forward_backward(x, y, None, scale=0.5, sync=True)
    many.forward_backward(x, y, None, scale=0.5, sync=True)
    for name, g in _grads(one).items():
        np.testing.assert_allclose(_grads(many)[name], g, rtol=1e-4, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("threads", [2, 3])
def test_threads_split_per_sequence_loop_counts(threads):
    """Parcae with one loop count per sequence: each shard runs its own rows' counts."""
    one = _engine(1, model="shakespeare-parcae", h0="zeros")  # h_0 = 0: no draw that differs by shard
    many = _engine(threads, model="shakespeare-parcae", h0="zeros")
    x, y = _batch()
    n_loops = np.array([1, 5, 2, 3, 1, 4])
    one.forward_backward(x, y, n_loops, scale=1.0, sync=True)
    many.forward_backward(x, y, n_loops, scale=1.0, sync=True)
    assert many.collect_loss(None) == pytest.approx(one.collect_loss(None), rel=1e-6)
    for name, g in _grads(one).items():
        np.testing.assert_allclose(_grads(many)[name], g, rtol=1e-4, atol=1e-7, err_msg=name)
    assert many.eval_loss([(x, y)], n_loops) == pytest.approx(one.eval_loss([(x, y)], n_loops), rel=1e-6)
    assert one.eval_loss([(x, y)], n_loops[::-1].copy()) != pytest.approx(one.eval_loss([(x, y)], n_loops))


def test_threads_leave_replicas_without_gradients():
    engine = _engine(2)
    engine.forward_backward(*_batch(), None, scale=1.0, sync=True)
    for replica in engine.parallel.replicas:
        assert all(p.grad is None for p in replica.parameters())


def test_eval_loss_with_threads():
    one, many = _engine(1), _engine(2)
    batches = [_batch(seed=s) for s in range(3)]
    assert many.eval_loss(batches) == pytest.approx(one.eval_loss(batches), rel=1e-6)


def test_threaded_runs_repeat_with_dropout():
    def run():
        engine = _engine(2, dropout=0.2)
        out = []
        for s in range(3):
            engine.forward_backward(*_batch(seed=s), None, scale=1.0, sync=True)
            out.append(engine.collect_loss(None))
            engine.optimizer_step(1e-2)
        return out, engine.weights()
    (l1, w1), (l2, w2) = run(), run()
    assert l1 == l2
    for k in w1:
        np.testing.assert_array_equal(w1[k], w2[k])


def test_replicas_follow_replaced_weights():
    """load_weights gives the model new arrays: the next step's replicas must use them."""
    engine = _engine(2)
    engine.load_weights({k: v * 0.5 for k, v in engine.weights().items()})
    one = _engine(1)
    one.load_weights(engine.weights())
    x, y = _batch()
    engine.forward_backward(x, y, None, scale=1.0, sync=True)
    one.forward_backward(x, y, None, scale=1.0, sync=True)
    assert engine.collect_loss(None) == pytest.approx(one.collect_loss(None), rel=1e-6)


def test_an_error_in_a_worker_reaches_the_caller(monkeypatch):
    engine = _engine(2)
    replica = engine.parallel.replicas[0]

    def broken(*args, **kwargs):
        raise RuntimeError("shard failed")
    monkeypatch.setattr(replica, "forward", broken)
    with pytest.raises(RuntimeError, match="shard failed"):
        engine.forward_backward(*_batch(), None, scale=1.0, sync=True)


def test_thread_count():
    assert resolve_threads(4, batch_size=2) == 2  # never more threads than sequences
    assert resolve_threads(1, batch_size=16) == 1
    assert resolve_threads(0, batch_size=1024) == blas_threads()
    with pytest.raises(ValueError, match="threads=-1"):
        resolve_threads(-1, batch_size=4)
    with pytest.raises(ConfigError, match="threads"):
        TrainConfig(threads=-2)
    with pytest.raises(ValueError, match="2 or more"):
        ThreadedDataParallel(ml.nn.Linear(2, 2), 1)


def test_close_gives_blas_its_threads_back():
    from threadpoolctl import threadpool_info

    def blas():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    before = blas()
    engine = _engine(2)
    assert all(n == 1 for n in blas())
    engine.close()
    assert blas() == before


def test_grad_mode_is_per_thread():
    """A thread inside no_grad() (Parcae's truncated loops) leaves another thread's graph on."""
    import threading

    inside, release = threading.Event(), threading.Event()

    def other():
        with ml.no_grad():
            inside.set()
            release.wait(5)
    t = threading.Thread(target=other)
    t.start()
    inside.wait(5)
    try:
        assert ml.is_grad_enabled()
        assert (ml.Tensor([1.0], requires_grad=True) * 2).requires_grad
    finally:
        release.set()
        t.join()
