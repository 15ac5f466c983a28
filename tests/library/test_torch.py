"""comhe.torch, the PyTorch front: values and gradients against the float64
references of tests/helpers/numpy_oracle.py (in float64, and in float32 within the bound of
tests/helpers/float32_bound.py), PyTorch's layouts, the modules' state (buffers, state_dict,
exact resume, device and dtype), half precision, torch.compile and bad input."""
import io

import numpy as np
import pytest
import torch
from torch import nn

import comhe.torch as ct
import float32_bound
import numpy_oracle as ref
from tolerances import F64_RTOL, FD_RTOL, close

LR, ITERS = 0.1, 3


def t64(x):
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


# ------------------------------------------------------------ functions, float64

@pytest.mark.parametrize('half', [False, True])
@pytest.mark.parametrize('power', ct.POWERS)
def test_energy_float64_equals_reference(arrays, power, half):
    got = ct.hyperspherical_energy(t64(arrays['W']), power, half)
    assert got.dtype == torch.float64
    close(got.item(), ref.energy(arrays['W'], power, half), F64_RTOL, f'energy {power} half={half}')
    batched = ct.hyperspherical_energy(t64(arrays['B']), power, half)
    close(batched.numpy(), [ref.energy(b, power, half) for b in arrays['B']], F64_RTOL, 'batched')


@pytest.mark.parametrize('power,half', [('2', False), ('2', True), ('a1', True), ('0', False)])
def test_energy_gradcheck(arrays, power, half):
    """Power '2''s written-out gradient and the autograd of the others, float64."""
    W = t64(arrays['W']).requires_grad_()
    assert torch.autograd.gradcheck(lambda w: ct.hyperspherical_energy(w, power, half), (W,))
    B = t64(arrays['B']).requires_grad_()
    up = t64(arrays['upstream'])
    assert torch.autograd.gradcheck(lambda b: (up * ct.hyperspherical_energy(b, power, half)).sum(), (B,))


def test_terms_float64_equal_reference(arrays):
    W, P, draws = arrays['W'], arrays['P'], arrays['draws']
    close(ct.random_projection_term(t64(W), t64(draws)).item(), ref.random_projection_term(W, draws),
          F64_RTOL, 'RP term')
    for variant in ct.VARIANTS:
        got = ct.learned_projection_term(variant, t64(W), t64(P), LR)
        close(got.item(), ref.learned_projection_term(variant, W, P, LR), FD_RTOL, f'{variant} term')
        stepped = ct.descend_projections(variant, [t64(P)], [t64(W)], LR, ITERS)[0]
        close(stepped.numpy(), ref.descend(variant, P, W, LR, ITERS), FD_RTOL, f'{variant} P steps')
    got = ct.learned_projection_term('angle', t64(W), t64(P), LR, lookahead_decay=True)
    close(got.item(), ref.learned_projection_term('angle', W, P, LR, True), FD_RTOL, 'AP with decay')


def test_terms_gradcheck(arrays):
    W = t64(arrays['W']).requires_grad_()
    draws, P = t64(arrays['draws']), t64(arrays['P'])
    assert torch.autograd.gradcheck(lambda w: ct.random_projection_term(w, draws), (W,))
    for variant in ct.VARIANTS:
        assert torch.autograd.gradcheck(lambda w: ct.learned_projection_term(variant, w, P, LR), (W,))


def test_float32_within_the_bound(arrays):
    """float32 results against float64 at the same float32 inputs (tests/helpers/float32_bound.py)."""
    W32 = arrays['W'].astype(np.float32)
    for power in ('2', 'a2'):
        for half in (False, True):
            got = ct.hyperspherical_energy(torch.from_numpy(W32), power, half)
            assert got.dtype == torch.float32
            float32_bound.assert_float32_result(got.item(), lambda W: ref.energy(W, power, half),
                                                {'W': W32}, n=18, depth=4, what=f'float32 energy {power}')


# ------------------------------------------------------------ layouts

LAYERS = {'linear': lambda: nn.Linear(12, 7), 'conv1d': lambda: nn.Conv1d(3, 6, 3),
          'conv2d': lambda: nn.Conv2d(3, 6, (3, 2)), 'conv3d': lambda: nn.Conv3d(2, 5, (2, 3, 2)),
          'conv_transpose2d': lambda: nn.ConvTranspose2d(4, 6, 3),
          'grouped_conv2d': lambda: nn.Conv2d(4, 6, 3, groups=2)}


@pytest.mark.parametrize('kind', LAYERS)
def test_pytorch_layouts(kind):
    """A module's neurons are its output units, each flattened in PyTorch's order:
    MHE of the module equals the reference on those columns, and not on the columns a
    Keras-style reshape (last axis = neurons) would take."""
    torch.manual_seed(0)
    layer = LAYERS[kind]().double()
    w = layer.weight.detach().numpy()
    axis = 1 if kind.startswith('conv_transpose') else 0
    right = np.moveaxis(w, axis, -1).reshape(-1, w.shape[axis])
    wrong = w.reshape(-1, w.shape[-1])
    reg = ct.MHE(nn.Sequential(layer), power='2', half_space=True)
    got = reg().item()
    close(got, ref.energy(right, '2', True), F64_RTOL, kind)
    assert abs(got - ref.energy(wrong, '2', True)) > 1e-3, 'the wrong layout would pass this test'
    layout = 'conv2d' if kind == 'grouped_conv2d' else kind
    close(ct.neurons(layer.weight, layout).detach().numpy(), right, 0, f'neurons({layout})')


def test_neuron_axes_for_other_modules():
    class Kernel(nn.Module):   # a layer that stores its neurons on the last axis
        def __init__(self):
            super().__init__()
            self.kernel = nn.Parameter(torch.randn(3, 3, 4, 6, dtype=torch.float64))
    model = nn.Sequential(Kernel(), nn.Linear(6, 5).double())
    reg = ct.MHE(model, layers=['1'], neuron_axes={'0.kernel': -1})
    assert reg.layer_names == ['1', '0.kernel']
    k = model[0].kernel.detach().numpy()
    want = ref.energy(model[1].weight.detach().numpy().T, '2') + ref.energy(k.reshape(-1, 6), '2')
    close(reg().item(), want, F64_RTOL, 'neuron_axes')


# ------------------------------------------------------------ the modules' state

def small_cnn(dtype=torch.float32):
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10)).to(dtype)


def regularisers(model):
    hidden = ['3', '7']
    return [ct.MHE(model, half_space=True, layers=['0']),
            ct.RandomProjection(model, pd=6, pn=3, seed=5, layers=hidden),
            ct.AngleProjection(model, pd=6, iters=1, seed=6, layers=hidden),
            ct.AdversarialProjection(model, pd=6, iters=3, seed=7, layers=hidden),
            ct.MHE(model, weight=10.0, layers=['9'])]


def train(model, regs, optimizer, steps, seed):
    rng = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(8, 1, 8, 8, generator=rng, dtype=next(model.parameters()).dtype)
        y = torch.randint(0, 10, (8,), generator=rng)
        for reg in regs:
            reg.take_projection_steps(optimizer)
        loss = nn.functional.cross_entropy(model(x), y) + sum(reg() for reg in regs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss.item()


def test_state_is_buffers_and_resumes_exactly():
    """No parameters of their own (the optimiser sees only the model's); P and the lr
    are buffers, RP's draw count extra state; a run saved and restored after 2 steps
    ends 3 steps later with exactly the weights and P of an uninterrupted run."""
    model = small_cnn()
    regs = regularisers(model)
    for reg in regs:
        assert list(reg.parameters()) == []
    assert set(regs[3].state_dict()) == {'P_3', 'P_7', 'learning_rate'}
    assert set(regs[1].state_dict()) == {'_extra_state'}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    train(model, regs, optimizer, 2, seed=0)
    saved = io.BytesIO()
    torch.save({'model': model.state_dict(), 'opt': optimizer.state_dict(),
                'regs': [r.state_dict() for r in regs]}, saved)
    train(model, regs, optimizer, 3, seed=1)
    assert regs[3].learning_rate.item() == pytest.approx(0.05)

    saved.seek(0)
    state = torch.load(saved)
    resumed = small_cnn()
    resumed.load_state_dict(state['model'])
    resumed_regs = regularisers(resumed)
    for reg, s in zip(resumed_regs, state['regs']):
        reg.load_state_dict(s)
    opt2 = torch.optim.SGD(resumed.parameters(), lr=0.05, momentum=0.9)
    opt2.load_state_dict(state['opt'])
    train(resumed, resumed_regs, opt2, 3, seed=1)
    for a, b in zip(model.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(regs[3].projections + regs[2].projections,
                    resumed_regs[3].projections + resumed_regs[2].projections):
        assert torch.equal(a, b)
    assert resumed_regs[1].calls == regs[1].calls == 5


def test_p_steps_follow_the_reference():
    """take_projection_steps moves each layer's P as the float64 reference does."""
    model = small_cnn(torch.float64)
    for cls, variant in ((ct.AngleProjection, 'angle'), (ct.AdversarialProjection, 'adversarial')):
        reg = cls(model, pd=4, iters=2, seed=3, layers=['7'])
        P0 = reg.projection('7').clone().numpy()
        reg.take_projection_steps(0.2)
        W = model[7].weight.detach().numpy().T
        close(reg.projection('7').numpy(), ref.descend(variant, P0, W, 0.2, 2), FD_RTOL, variant)
        close(reg().item(), ref.learned_projection_term(variant, W, reg.projection('7').numpy(), 0.2),
              FD_RTOL, variant + ' term')


def test_rp_draws_depend_on_seed_and_count_only():
    model = small_cnn()
    a, b = (ct.RandomProjection(model, pd=6, pn=2, seed=9, layers=['3']) for _ in range(2))
    first = a().item()
    assert b().item() == first
    assert a().item() != first                # a new draw each call
    c = ct.RandomProjection(model, pd=6, pn=2, seed=10, layers=['3'])
    assert c().item() != first


def test_buffers_follow_the_weights_dtype():
    model = small_cnn()
    reg = ct.AdversarialProjection(model, pd=6, layers=['3'])
    assert reg.projection('3').dtype == torch.float32
    model.double()
    reg.take_projection_steps(0.1)
    value = reg()
    assert value.dtype == torch.float64 and reg.projection('3').dtype == torch.float64


def test_half_precision_computed_in_float32():
    """bf16 weights: the term is float32, the float32 energy of the bf16 values, the
    same under autocast; P kept in float32."""
    model = small_cnn(torch.bfloat16)
    mhe = ct.MHE(model, half_space=True, layers=['3'])
    value = mhe()
    assert value.dtype == torch.float32
    want = ct.hyperspherical_energy(ct.neurons(model[3].weight.float(), 'conv2d'), '2', True)
    assert torch.equal(value, want)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert torch.equal(mhe(), want)
    advp = ct.AdversarialProjection(model, pd=6, layers=['3'])
    advp.take_projection_steps(0.1)
    assert advp.projection('3').dtype == torch.float32 and advp().dtype == torch.float32


def test_torch_compile_matches_eager():
    """MHE and AdvP compile as one graph (fullgraph=True); RP compiles with a graph break
    at its draws. Values and gradients equal the eager ones."""
    model = small_cnn()
    for reg, fullgraph in ((ct.MHE(model, layers=['3', '7']), True),
                           (ct.AdversarialProjection(model, pd=6, layers=['3', '7']), True),
                           (ct.RandomProjection(model, pd=6, pn=2, layers=['3']), False)):
        compiled = torch.compile(reg, backend='aot_eager', fullgraph=fullgraph)
        calls = getattr(reg, 'calls', 0)
        got = compiled()
        (g_got,) = torch.autograd.grad(got, model[3].weight)
        reg.calls = calls
        want = reg()
        (g_want,) = torch.autograd.grad(want, model[3].weight)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        torch.testing.assert_close(g_got, g_want, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------ bad input

def test_bad_input_is_refused_clearly():
    model = small_cnn()
    with pytest.raises(ValueError, match='at least 2 axes'):
        ct.neurons(torch.randn(5), 0)
    with pytest.raises(ValueError, match='a linear weight has 2 axes'):
        ct.neurons(model[0].weight, 'linear')
    with pytest.raises(ValueError, match='neurons are on axis 0'):
        ct.MHE(model, neuron_axes={'3.weight': 1})
    with pytest.raises(ValueError, match='pd=40 is larger than the dimension d=32'):
        ct.RandomProjection(model, pd=40, layers=['7'])
    with pytest.raises(ValueError, match='pn must be an integer >= 1'):
        ct.RandomProjection(model, pd=4, pn=0)
    with pytest.raises(TypeError, match='floating point'):
        ct.neurons(torch.ones(4, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match='floating'):
        ct.hyperspherical_energy(torch.ones(4, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match="'1' has 1 neuron"):
        ct.MHE(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1)), layers=['0', '1'])
    with pytest.raises(ValueError, match='no module named'):
        ct.MHE(model, layers=['fc'])
    with pytest.raises(ValueError, match='cannot be told from its type'):
        ct.MHE(model, layers=['1'])
    with pytest.raises(ValueError, match='unknown power'):
        ct.MHE(model, power='3')
    with pytest.raises(ValueError, match=r"pnd=9 leaves '3' \(8 neurons\) without a projection; use pnd <= 8"):
        ct.RandomProjection(model, pd=4, pnd=9, layers=['3'])
    with pytest.raises(ValueError, match='form must be one of auto, direct, gram'):
        ct.AngleProjection(model, pd=4, form='fast', layers=['3'])


def test_nan_weights_give_a_nan_term():
    model = small_cnn()
    with torch.no_grad():
        model[3].weight[0, 0, 0, 0] = float('nan')
    for reg in regularisers(model)[:4]:
        reg.take_projection_steps(0.1)
        value = reg()
        assert torch.isnan(value) or reg.layer_names == ['0'], type(reg).__name__


def test_the_default_selection_leaves_out_what_cannot_take_the_term():
    """A typical CNN: its first conv (d = 3 x 3 x 3 = 27 < pd) and a one-neuron head are left
    out with a warning naming them; named explicitly they are errors. One training loop
    serves every regulariser (MHE and RP take no P steps)."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(),
                          nn.Linear(8, 4), nn.Linear(4, 1))
    with pytest.warns(UserWarning, match=r"left out of the regulariser: '0' \(d=27 < pd=30.*'5' \(1 neuron") as said:
        reg = ct.AdversarialProjection(model, pd=30)
    assert said[0].filename == __file__      # attributed to the line that made it
    assert reg.layer_names == ['2']
    with pytest.raises(ValueError, match='pd=30 is larger than the dimension d=27'):
        ct.AdversarialProjection(model, pd=30, layers=['0', '2'])
    with pytest.raises(ValueError, match="'5' has 1 neuron"):
        ct.MHE(model, layers='5')
    for each in (ct.MHE(model, layers=['0', '2']), ct.RandomProjection(model, pd=4, pn=2, layers='2'), reg):
        each.take_projection_steps(0.1)
        assert torch.isfinite(each())


def test_arguments_are_checked_with_the_fix():
    model = small_cnn()
    reg = ct.AdversarialProjection(model, pd=np.int64(6), layers=['3'])   # NumPy integers are integers
    assert reg.pd == 6
    with pytest.raises(TypeError, match='lr must be a number or a torch.optim.Optimizer'):
        reg.take_projection_steps(torch.optim.lr_scheduler.StepLR(torch.optim.SGD(model.parameters(), 0.1), 1))
    with pytest.raises(ValueError, match="no layer 'fc' here; the layers: 3"):
        reg.projection('fc')
    assert ct.MHE(model, layers='3').layer_names == ['3']       # one name, not its letters


def test_backward_under_autocast_stays_in_full_precision():
    """loss.backward() called inside an autocast block (PyTorch advises against it): the
    energy's written-out gradient is computed in float32 as the forward pass, equal to the
    gradient outside autocast (AdvP's look-ahead goes through PyTorch's own backward ops,
    which autocast does touch); a second-order gradient through it is refused, not wrong."""
    torch.manual_seed(3)
    layer = nn.Linear(32, 8)
    with torch.no_grad():
        layer.weight[1] = layer.weight[0] + 1e-4 * torch.randn(32)    # two nearly parallel neurons
    for reg in (ct.MHE(nn.Sequential(layer)), ct.MHE(nn.Sequential(layer), half_space=True)):
        (want,) = torch.autograd.grad(reg(), layer.weight)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            (got,) = torch.autograd.grad(reg(), layer.weight)
        assert torch.equal(got, want), type(reg).__name__
    W = ct.neurons(layer.weight.detach().double()).requires_grad_()
    (g,) = torch.autograd.grad(ct.hyperspherical_energy(W, '2', True), W, create_graph=True)
    with pytest.raises(RuntimeError, match='differentiated twice|once_differentiable|does not require grad'):
        torch.autograd.grad(g.sum(), W)
