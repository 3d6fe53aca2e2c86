"""The ops as the dispatcher's other clients see them: torch.library.opcheck (schema, autograd
registration, FakeTensor/Meta kernels, AOT dispatch), torch.compile, TorchScript, and the
composite (ATen-op) kernel that devices without a fused kernel run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import (
    FLOAT_DTYPES,
    RANGE_KINDS,
    assert_bitwise_equal,
    per_channel_case,
    per_tensor_case,
    random_grad,
)
from torch._inductor.utils import fresh_cache
from torch.utils._python_dispatch import TorchDispatchMode

import edgeqat

ops = torch.ops.edgeqat


def _leaf(t, requires_grad):
    """A fresh leaf with t's values and exactly t's strides (clone() would make a non-dense
    t dense)."""
    copy = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device)
    with torch.no_grad():
        copy.copy_(t)
    assert copy.stride() == t.stride()
    return copy.requires_grad_(requires_grad)


# --------------------------------------------------------------------------------------------
# opcheck


def _non_dense_inputs():
    """Inputs that are neither contiguous nor non-overlapping-and-dense (seeded)."""
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(2, 3, 8, 8, generator=gen).contiguous(memory_format=torch.channels_last)
    return {
        "transposed_slice": torch.randn(6, 5, generator=gen).t()[:, ::2],
        "channels_last_slice": base[:, :, ::2, :],
    }


def _opcheck_cases():
    """(id, op overload, args) for every op; inputs are random but seeded."""
    rng = np.random.default_rng(0)
    cases = []
    for dtype in (torch.float32, torch.float64):
        np_dtype = np.float64 if dtype == torch.float64 else np.float32
        for shape in [(5,), (3, 4), (2, 3, 4, 5)]:
            x, lo, hi = per_tensor_case(rng, shape, "contains_zero", 8, False, np_dtype)
            cases.append(
                (
                    f"per_tensor-{dtype}-{shape}",
                    ops.fake_quant_with_min_max_vars.default,
                    (x.to(dtype), lo.to(dtype), hi.to(dtype), 8, False),
                )
            )
        for shape, axis in [((3, 4), 0), ((3, 4), 1), ((2, 3, 4, 5), 1), ((2, 3, 4, 5), -1)]:
            x, lo, hi = per_channel_case(rng, shape, axis, 4, True, np_dtype)
            cases.append(
                (
                    f"per_channel-{dtype}-{shape}-{axis}",
                    ops.fake_quant_with_min_max_vars_per_channel.default,
                    (x.to(dtype), lo.to(dtype), hi.to(dtype), axis, 4, True),
                )
            )
    x, lo, hi = per_channel_case(rng, (4, 6), 1, 8, False)
    cl = per_channel_case(rng, (2, 3, 4, 5), 1, 8, False)
    cl = (cl[0].contiguous(memory_format=torch.channels_last), *cl[1:])
    cachemask = ops._fake_quant_cachemask.default
    cases += [
        ("cachemask-per_tensor", cachemask, (x, lo[0], hi[0], None, 8, False)),
        ("cachemask-axis1", cachemask, (x, lo, hi, 1, 3, False)),
        ("cachemask-channels_last", cachemask, (*cl, 1, 8, True)),
    ]
    mask = torch.from_numpy(rng.integers(0, 4, size=(4, 6)).astype(np.uint8))
    f16, f32, f64 = torch.float16, torch.float32, torch.float64
    for dtype, axis, min_dtype, max_dtype in [
        (f32, None, f32, f32),
        (f32, 1, f64, f64),
        (f64, 0, f64, f64),
        (f64, 1, f32, f32),
        (f32, -1, f32, f32),  # requires_grad: the double backward with a negative axis
        (f64, -2, f64, f16),
        (f32, None, f16, f64),
        (f32, 1, torch.bfloat16, f64),
    ]:
        cases.append(
            (
                f"backward-{dtype}-{axis}-{min_dtype}-{max_dtype}",
                ops._fake_quant_backward.default,
                (random_grad(rng, (4, 6), dtype), mask, axis, min_dtype, max_dtype),
            )
        )
    # Inputs that are not dense (strided slices): outputs get empty_like's strides on every
    # backend, so FakeTensor and the real kernels agree.
    for name, x in _non_dense_inputs().items():
        lo, hi = torch.tensor(-1.0), torch.tensor(1.0)
        pc_lo = torch.linspace(-2.0, -0.5, x.shape[1])
        pc_hi = torch.linspace(0.5, 3.0, x.shape[1])
        per_channel = ops.fake_quant_with_min_max_vars_per_channel.default
        backward = ops._fake_quant_backward.default
        dense_grad = random_grad(rng, x.shape, torch.float32)
        dense_mask = torch.from_numpy(rng.integers(0, 4, size=x.shape).astype(np.uint8))
        wide = (x.shape[0], 2 * x.shape[1], *x.shape[2:])
        sliced_mask = torch.from_numpy(rng.integers(0, 4, size=wide).astype(np.uint8))[:, ::2]
        assert not sliced_mask.is_contiguous() and sliced_mask.shape == x.shape
        cases += [
            (f"{name}-per_tensor", ops.fake_quant_with_min_max_vars.default, (x, lo, hi, 8, False)),
            (f"{name}-per_channel", per_channel, (x, pc_lo, pc_hi, 1, 8, False)),
            (f"{name}-cachemask", cachemask, (x, lo, hi, None, 8, False)),
            (f"{name}-cachemask-axis1", cachemask, (x, pc_lo, pc_hi, 1, 4, True)),
            (f"{name}-backward-mask", backward, (dense_grad, sliced_mask, 1, f32, f64)),
            (f"{name}-backward-grad", backward, (x, dense_mask, -1, f64, f32)),
            (f"{name}-backward-both", backward, (x, sliced_mask, None, f32, f16)),
        ]
    return cases


OPCHECK_CASES = _opcheck_cases()


@pytest.mark.parametrize("requires_grad", [False, True], ids=["no_grad", "requires_grad"])
@pytest.mark.parametrize(
    ("op", "args"), [c[1:] for c in OPCHECK_CASES], ids=[c[0] for c in OPCHECK_CASES]
)
def test_opcheck(op, args, requires_grad):
    args = tuple(
        _leaf(a, requires_grad) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
        for a in args
    )
    torch.library.opcheck(op, args)


def _on_meta(t):
    """t on the Meta device with exactly t's strides (t.to("meta") would make it dense)."""
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")


@pytest.mark.parametrize("name", list(_non_dense_inputs()))
def test_meta_strides_match_cpu_for_non_dense_input(name):
    """A non-dense x: the CPU kernels compute on a dense copy laid out as empty_like(x), and the
    Meta kernels return empty_like(x): same strides, so FakeTensor tells the truth."""
    x = _non_dense_inputs()[name]
    assert not x.is_contiguous() and x.stride() != torch.empty_like(x).stride()
    lo, hi = torch.tensor(-1.0), torch.tensor(1.0)
    c = x.shape[1]
    pc_lo, pc_hi = -torch.ones(c), torch.ones(c)
    calls = [
        (ops.fake_quant_with_min_max_vars, (x, lo, hi, 8, False)),
        (ops.fake_quant_with_min_max_vars_per_channel, (x, pc_lo, pc_hi, 1, 8, False)),
        (ops._fake_quant_cachemask, (x, lo, hi, None, 8, False)),
        (ops._fake_quant_cachemask, (x, pc_lo, pc_hi, 1 - x.dim(), 8, False)),
    ]
    expected_stride = torch.empty_like(x).stride()
    for op, args in calls:
        real = op(*args)
        meta = op(*(_on_meta(a) if isinstance(a, torch.Tensor) else a for a in args))
        real, meta = (r if isinstance(r, tuple) else (r,) for r in (real, meta))
        assert [(t.shape, t.stride(), t.dtype) for t in meta] == [
            (t.shape, t.stride(), t.dtype) for t in real
        ], op
        assert [t.stride() for t in real] == [expected_stride] * len(real), op
    # The backward with a non-dense mask and grad: grad_x is laid out as empty_like(mask).
    mask = ops._fake_quant_cachemask(x, lo, hi, None, 8, False)[1]
    wide = torch.cat([x, x], dim=1)
    sliced_mask = ops._fake_quant_cachemask(wide, lo, hi, None, 8, False)[1][:, ::2]
    assert sliced_mask.shape == x.shape
    assert sliced_mask.stride() != torch.empty_like(sliced_mask).stride()
    for m, g in [(mask, x), (sliced_mask, x), (sliced_mask, torch.ones(x.shape))]:
        for axis in (None, 1, -1):
            real = ops._fake_quant_backward(g, m, axis, torch.float16, torch.float64)
            meta = ops._fake_quant_backward(
                _on_meta(g), _on_meta(m), axis, torch.float16, torch.float64
            )
            assert [(t.shape, t.stride(), t.dtype) for t in meta] == [
                (t.shape, t.stride(), t.dtype) for t in real
            ]
            assert real[0].stride() == torch.empty_like(m).stride()


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "permuted"])
def test_meta_strides_match_cpu_for_dense_input(layout):
    x = torch.randn(2, 3, 4, 5)
    x = {
        "contiguous": x,
        "channels_last": x.contiguous(memory_format=torch.channels_last),
        "permuted": x.permute(3, 1, 0, 2).contiguous().permute(2, 1, 3, 0),
    }[layout]
    lo, hi = -torch.ones(3), torch.ones(3)
    real = ops._fake_quant_cachemask(x, lo, hi, 1, 8, False)
    meta = ops._fake_quant_cachemask(x.to("meta"), lo.to("meta"), hi.to("meta"), 1, 8, False)
    assert [t.stride() for t in meta] == [t.stride() for t in real] == [x.stride()] * 2
    grads = ops._fake_quant_backward(torch.ones_like(x), real[1], 1, torch.float32, torch.float64)
    grads_meta = ops._fake_quant_backward(
        torch.ones_like(x, device="meta"), meta[1], 1, torch.float32, torch.float64
    )
    assert [(g.shape, g.stride(), g.dtype) for g in grads] == [
        (g.shape, g.stride(), g.dtype) for g in grads_meta
    ]


# --------------------------------------------------------------------------------------------
# torch.compile and TorchScript


@pytest.fixture
def fresh_compile_cache(tmp_path):
    """Compile into empty Inductor/AOTAutograd caches. Their keys are the traced graphs, not
    edgeqat's C++ autograd kernels: a cache filled by an older build of edgeqat replays its
    backward graphs, with that build's op schemas (seen when _fake_quant_backward gained
    max_dtype: "missing value for argument 'max_dtype'")."""
    torch._dynamo.reset()
    with fresh_cache(dir=str(tmp_path)):
        yield
    torch._dynamo.reset()


def _eager_and_grads(fn, inputs, grads):
    inputs = [_leaf(t, True) for t in inputs]
    outputs = fn(*inputs)
    input_grads = torch.autograd.grad(outputs, inputs, grads)
    return [o.detach() for o in outputs], list(input_grads)


def _two_ops(x, lo, hi, w, wlo, whi, axis: int, num_bits: int, narrow: bool):
    return (
        edgeqat.fake_quant(x, lo, hi, num_bits, narrow),
        edgeqat.fake_quant_per_channel(w, wlo, whi, axis, num_bits, narrow),
        # Generated (Inductor) kernels before and after the op; scaling by powers of two is
        # exact, so eager and compiled must still agree bit for bit.
        edgeqat.fake_quant(x * 2, lo, hi, num_bits, narrow) * 0.5,
    )


# torch 2.13 deprecates TorchScript and still uses script_method inside torch.compile.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.parametrize(
    ("dtype", "axis", "num_bits", "narrow"),
    [(torch.float32, 0, 8, False), (torch.float64, 3, 4, True)],
)
def test_compile_matches_eager(fresh_compile_cache, dtype, axis, num_bits, narrow):
    rng = np.random.default_rng(5)
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    x, lo, hi = per_tensor_case(rng, (16, 12), "contains_zero", num_bits, narrow, np_dtype)
    w, wlo, whi = per_channel_case(rng, (6, 4, 3, 3), axis, num_bits, narrow, np_dtype)
    inputs = [t.to(dtype) for t in (x, lo, hi, w, wlo, whi)]
    grads = [random_grad(rng, t.shape, dtype) for t in (x, w, x)]

    def fn(x, lo, hi, w, wlo, whi):
        return _two_ops(x, lo, hi, w, wlo, whi, axis, num_bits, narrow)

    compiled = torch.compile(fn, fullgraph=True, dynamic=False)
    expected_out, expected_grads = _eager_and_grads(fn, inputs, grads)
    got_out, got_grads = _eager_and_grads(compiled, inputs, grads)
    for got, expected in zip(got_out + got_grads, expected_out + expected_grads):
        assert_bitwise_equal(got, expected)
    # Inference through the compiled function as well.
    with torch.no_grad():
        for got, expected in zip(compiled(*inputs), expected_out):
            assert_bitwise_equal(got, expected)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("name", list(_non_dense_inputs()))
def test_compile_non_dense_input(fresh_compile_cache, name):
    """torch.compile(fullgraph=True) on non-dense inputs, and on a non-dense view made inside
    the graph: the compiled code trusts the Meta kernels' strides, which must be the CPU
    kernels' (they used to differ and Inductor's stride assertions failed)."""
    rng = np.random.default_rng(9)
    x = _non_dense_inputs()[name]
    c = x.shape[1]
    lo = torch.tensor(-1.0, dtype=torch.float16)
    hi = torch.tensor(1.5, dtype=torch.float64)
    pc_lo = torch.linspace(-2.0, -0.5, c)
    pc_hi = torch.linspace(0.5, 3.0, c, dtype=torch.float64)

    def fn(x, lo, hi, pc_lo, pc_hi):
        return (
            edgeqat.fake_quant(x, lo, hi),
            edgeqat.fake_quant_per_channel(x, pc_lo, pc_hi, 1 - x.dim()),
            edgeqat.fake_quant(x.transpose(0, -1)[::2], lo, hi),
        )

    inputs = [x, lo, hi, pc_lo, pc_hi]
    grads = [random_grad(rng, o.shape, x.dtype) for o in fn(*inputs)]
    compiled = torch.compile(fn, fullgraph=True, dynamic=False)
    expected_out, expected_grads = _eager_and_grads(fn, inputs, grads)
    got_out, got_grads = _eager_and_grads(compiled, inputs, grads)
    for got, expected in zip(got_out + got_grads, expected_out + expected_grads):
        assert_bitwise_equal(got, expected)
    assert got_out[0].stride() == expected_out[0].stride() == torch.empty_like(x).stride()
    assert got_out[1].stride() == expected_out[1].stride()
    with torch.no_grad():
        for got, expected in zip(compiled(*inputs), expected_out):
            assert_bitwise_equal(got, expected)


@pytest.mark.filterwarnings("ignore:`torch.jit.script:DeprecationWarning")
def test_torchscript_matches_eager():
    @torch.jit.script
    def scripted(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int, narrow: bool):
        return torch.ops.edgeqat.fake_quant_with_min_max_vars(x, lo, hi, bits, narrow)

    @torch.jit.script
    def scripted_pc(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, axis: int):
        return torch.ops.edgeqat.fake_quant_with_min_max_vars_per_channel(x, lo, hi, axis)

    rng = np.random.default_rng(6)
    for kind in RANGE_KINDS:
        for bits, narrow in [(8, False), (5, True)]:
            x, lo, hi = per_tensor_case(rng, (40,), kind, bits, narrow)
            inputs = (x, lo, hi)
            grad = [random_grad(rng, x.shape, torch.float32)]
            expected = _eager_and_grads(
                lambda *t, b=bits, n=narrow: [edgeqat.fake_quant(*t, b, n)], inputs, grad
            )
            got = _eager_and_grads(lambda *t, b=bits, n=narrow: [scripted(*t, b, n)], inputs, grad)
            for g, e in zip(got[0] + got[1], expected[0] + expected[1]):
                assert_bitwise_equal(g, e)
    x, lo, hi = per_channel_case(rng, (3, 4, 5), 1, 8, False)
    grad = [random_grad(rng, x.shape, torch.float32)]
    expected = _eager_and_grads(
        lambda *t: [edgeqat.fake_quant_per_channel(*t, 1)], (x, lo, hi), grad
    )
    got = _eager_and_grads(lambda *t: [scripted_pc(*t, 1)], (x, lo, hi), grad)
    for g, e in zip(got[0] + got[1], expected[0] + expected[1]):
        assert_bitwise_equal(g, e)
    assert "edgeqat::fake_quant_with_min_max_vars" in str(scripted.graph)


# --------------------------------------------------------------------------------------------
# The composite (ATen-op) kernel against the fused CPU kernel
#
# The composite kernels are registered for CompositeExplicitAutograd, so the dispatcher fills
# every backend without its own kernel (CUDA among them) with them. Redispatching with the CUDA
# key set runs that table entry on CPU tensors: the composite code calls only ATen ops, which
# dispatch on the tensors they get.

COMPOSITE_KEYS = torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA)


def composite_cachemask(x, lo, hi, axis, num_bits=8, narrow_range=False):
    return ops._fake_quant_cachemask.default.redispatch(
        COMPOSITE_KEYS, x, lo, hi, axis, num_bits, narrow_range
    )


def composite_backward(grad, mask, axis, min_dtype, max_dtype):
    return ops._fake_quant_backward.default.redispatch(
        COMPOSITE_KEYS, grad, mask, axis, min_dtype, max_dtype
    )


class _RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.add(func)
        return func(*args, **(kwargs or {}))


def test_redispatch_reaches_the_composite_kernel():
    """Not a tautology check: the composite runs ATen ops (floor, clamp, where) that the fused
    kernel never calls, and the plain CPU call of the op does not."""
    x = torch.randn(10)
    lo, hi = torch.tensor(-1.0), torch.tensor(1.0)
    for entry in ("_fake_quant_cachemask", "_fake_quant_backward"):
        table = torch._C._dispatch_dump_table(f"edgeqat::{entry}")
        cuda = next(line for line in table.splitlines() if line.startswith("CUDA:"))
        assert "default backend kernel" in cuda, cuda
    with _RecordOps() as rec:
        _, mask = composite_cachemask(x, lo, hi, None)
    assert torch.ops.aten.floor.default in rec.seen
    with _RecordOps() as rec:
        composite_backward(torch.ones(10), mask, None, torch.float32, torch.float32)
    assert torch.ops.aten.where.self in rec.seen
    with _RecordOps() as rec:
        ops._fake_quant_cachemask(x, lo, hi, None, 8, False)
    assert torch.ops.aten.floor.default not in rec.seen


def _compare_composite(x, lo, hi, axis, num_bits, narrow, grad):
    fused = ops._fake_quant_cachemask(x, lo, hi, axis, num_bits, narrow)
    comp = composite_cachemask(x, lo, hi, axis, num_bits, narrow)
    assert_bitwise_equal(comp[0], fused[0])
    assert_bitwise_equal(comp[1], fused[1])
    range_dtypes = [
        (lo.dtype, hi.dtype),
        (torch.float64, torch.float64),
        (torch.float16, torch.float64),
        (torch.float64, torch.bfloat16),
    ]
    for min_dtype, max_dtype in range_dtypes:
        fused_grads = ops._fake_quant_backward(grad, fused[1], axis, min_dtype, max_dtype)
        comp_grads = composite_backward(grad, comp[1], axis, min_dtype, max_dtype)
        assert [g.dtype for g in comp_grads] == [grad.dtype, min_dtype, max_dtype]
        for c, f in zip(comp_grads, fused_grads):
            assert_bitwise_equal(c, f)
    # The public ops' composite entries give the same output.
    if axis is None:
        public = ops.fake_quant_with_min_max_vars.default.redispatch(
            COMPOSITE_KEYS, x, lo, hi, num_bits, narrow
        )
    else:
        public = ops.fake_quant_with_min_max_vars_per_channel.default.redispatch(
            COMPOSITE_KEYS, x, lo, hi, axis, num_bits, narrow
        )
    assert_bitwise_equal(public, fused[0])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("kind", RANGE_KINDS)
def test_composite_matches_fused_per_tensor(kind, dtype):
    rng = np.random.default_rng([RANGE_KINDS.index(kind), dtype.itemsize])
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    for num_bits, narrow in [(8, False), (int(rng.integers(2, 17)), True)]:
        x, lo, hi = per_tensor_case(rng, (700,), kind, num_bits, narrow, np_dtype)
        x = x.to(dtype)
        grad = random_grad(rng, x.shape, dtype)
        _compare_composite(x, lo, hi, None, num_bits, narrow, grad)
        _compare_composite(x, lo.double(), hi.double(), None, num_bits, narrow, grad)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(
    ("shape", "axis"),
    [((9,), 0), ((6, 50), 0), ((6, 50), 1), ((3, 4, 5, 6), 1), ((3, 4, 5, 6), -1)],
)
def test_composite_matches_fused_per_channel(shape, axis, dtype):
    rng = np.random.default_rng([len(shape), axis % len(shape), dtype.itemsize])
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    num_bits = int(rng.choice([2, 4, 8, 16]))
    x, lo, hi = per_channel_case(rng, shape, axis, num_bits, False, np_dtype)
    x = x.to(dtype)
    grad = random_grad(rng, shape, dtype)
    _compare_composite(x, lo, hi, axis, num_bits, False, grad)
    if len(shape) == 4:
        xl = x.contiguous(memory_format=torch.channels_last)
        _compare_composite(xl, lo, hi, axis, num_bits, True, grad)
        _compare_composite(x[:, :, ::2], lo, hi, axis, num_bits, True, grad[:, :, ::2])


def test_composite_special_values():
    x = torch.tensor([-np.inf, -2.0, -0.0, 0.0, 0.3, 1.0, np.inf, np.nan])
    grad = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0])
    for lo, hi in [(-1.0, 1.0), (0.5, 0.5), (0.0, 0.0), (-126.5, 128.5), (2.0, 5.0)]:
        _compare_composite(x, torch.tensor(lo), torch.tensor(hi), None, 8, False, grad)
    pc_lo, pc_hi = torch.tensor([-1.0, 0.0, 3.0]), torch.tensor([1.0, 0.0, 3.0])
    xs = torch.stack([x, x, x])
    _compare_composite(xs, pc_lo, pc_hi, 0, 8, False, torch.stack([grad] * 3))
    empty = torch.empty(0, 3)
    _compare_composite(empty, pc_lo, pc_hi, 1, 8, False, torch.empty(0, 3))


def _first_line_of_error(fn):
    with pytest.raises(RuntimeError) as info:
        fn()
    return str(info.value).splitlines()[0]


F64 = torch.float64
COMPOSITE_ERRORS = [
    # (x, lo, hi, axis, num_bits, message)
    (torch.zeros(4), torch.tensor(-3e38), torch.tensor(3e38), None, 8, "max - min overflows Float"),
    (
        torch.zeros(4, dtype=torch.float16),
        torch.tensor(-1e39, dtype=F64),
        torch.tensor(1.0, dtype=F64),
        None,
        8,
        "min must be finite in Float, got -inf",
    ),
    (
        torch.zeros(4, dtype=F64),
        torch.tensor(1 + 2**-52, dtype=F64),
        torch.tensor(1.0, dtype=F64),
        None,
        8,
        "min = 1.0000000000000002 is greater than max = 1",
    ),
    (
        torch.zeros(2, 3),
        torch.tensor([0.0, 1.0000001, 0.0]),
        torch.ones(3),
        1,
        8,
        "min[1] = 1.00000012 is greater than max[1] = 1",
    ),
    (
        torch.zeros(2, 3),
        torch.tensor([0.0, 0.0, -3e38]),
        torch.tensor([1.0, 1.0, 3e38]),
        -1,
        8,
        "[2] is too wide: max - min overflows Float",
    ),
    (torch.zeros(2, 3), -torch.ones(2), torch.ones(2), 0, 1, "num_bits must be in [2, 16]"),
]


@pytest.mark.parametrize("case", range(len(COMPOSITE_ERRORS)))
def test_composite_errors_match_fused(case):
    """The composite kernel checks the range in the compute dtype too, with the same message
    under the public op's name."""
    x, lo, hi, axis, num_bits, message = COMPOSITE_ERRORS[case]
    op = (
        "edgeqat::fake_quant_with_min_max_vars"
        if axis is None
        else "edgeqat::fake_quant_with_min_max_vars_per_channel"
    )
    fused = _first_line_of_error(
        lambda: ops._fake_quant_cachemask(x, lo, hi, axis, num_bits, False)
    )
    comp = _first_line_of_error(lambda: composite_cachemask(x, lo, hi, axis, num_bits))
    assert comp == fused
    assert comp.startswith(f"{op}: ") and message in comp, comp
