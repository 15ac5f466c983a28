"""MHE and CoMHE for PyTorch modules, in PyTorch's own layouts.

    import comhe.torch as comhe

    reg = comhe.AdversarialProjection(model, pd=30, iters=10)    # or RandomProjection, MHE, ...
    for x, y in loader:
        reg.take_projection_steps(optimizer)    # AP/AdvP: P's steps at the current lr
        loss = F.cross_entropy(model(x), y) + reg()
        optimizer.zero_grad(); loss.backward(); optimizer.step()

Each regulariser is an ``nn.Module`` built from a model: ``reg()`` returns the sum
over the chosen layers of ``weight * term(W)``, differentiable into the model's
weights. A layer's neurons are the rows of its weight (``Linear [out, in]``,
``Conv1d/2d/3d [out, in/groups, *k]``; axis 1 for ``ConvTranspose``, groups 1),
each flattened in PyTorch's order; ``neuron_axes`` names the axis for a parameter
of any other module. The regulariser's state (AP/AdvP's ``P`` per layer and the
learning rate of its last steps, RP's count of draws) is buffers and extra state:
never parameters, so the model's optimiser never sees it; it follows the weights'
device and dtype, and ``state_dict`` / ``load_state_dict`` save and restore it, so
a resumed run continues exactly.

Float16 and bfloat16 weights are computed in float32 (autocast is switched off
inside), float64 stays float64. The math is ``comhe.energy`` and
``comhe.projections``, shared with the JAX and Keras fronts; the functions below
take ``W [d, N]`` (``neurons(weight, layout)`` makes it).

NaN weights give a NaN term (never a finite number): check the loss, as for any
NaN in training.
"""
import re
import sys
import warnings

import numpy as np
import torch
from torch import nn

from comhe import energy as _energy
from comhe import projections as _projections
from comhe.energy import POWERS
from comhe.projections import VARIANTS, num_projections

__all__ = ['POWERS', 'VARIANTS', 'LAYOUTS', 'neurons', 'hyperspherical_energy', 'random_projection_term',
           'learned_projection_term', 'descend_projections', 'MHE', 'RandomProjection',
           'AngleProjection', 'AdversarialProjection']

# layout name -> (the weight's number of axes, the axis of the neurons)
LAYOUTS = {'linear': (2, 0), 'conv1d': (3, 0), 'conv2d': (4, 0), 'conv3d': (5, 0),
           'conv_transpose1d': (3, 1), 'conv_transpose2d': (4, 1), 'conv_transpose3d': (5, 1)}
_MODULE_LAYOUTS = {nn.Linear: 'linear', nn.Conv1d: 'conv1d', nn.Conv2d: 'conv2d', nn.Conv3d: 'conv3d',
                   nn.ConvTranspose1d: 'conv_transpose1d', nn.ConvTranspose2d: 'conv_transpose2d',
                   nn.ConvTranspose3d: 'conv_transpose3d'}
_HALF = (torch.float16, torch.bfloat16)


def _compute_dtype(dtype):
    return torch.float32 if dtype in _HALF else dtype


def neurons(weight, layout='linear'):
    """``W [d, N]`` (float32 for half-precision weights) from a PyTorch weight.

    ``layout``: one of ``LAYOUTS`` (``'linear'`` ``[out, in]``, ``'conv2d'``
    ``[out, in/groups, kh, kw]``, ...), checked against the weight's number of axes,
    or an int, the axis that holds the neurons of any other weight."""
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f'weight must be a torch.Tensor, got {type(weight).__name__}')
    if isinstance(layout, str):
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)} or an axis")
        ndim, axis = LAYOUTS[layout]
        if weight.dim() != ndim:
            raise ValueError(f'a {layout} weight has {ndim} axes, got shape {tuple(weight.shape)}: '
                             'name the layout of the layer it comes from, or its neuron axis as an int')
    elif isinstance(layout, int) and not isinstance(layout, bool):
        axis = layout
    else:
        raise TypeError(f'layout must be a layout name or an int axis, got {layout!r}')
    if not weight.is_floating_point():
        raise TypeError(f'weight must be floating point, got {weight.dtype}: cast it first '
                        '(an integer tensor has no gradient)')
    return _float(_energy.neurons_as_columns(weight, axis))


def _float(W):
    return W.float() if W.dtype in _HALF else W


def _full_precision(W):
    """No autocast inside: the terms are computed in the weights' (compute) dtype."""
    return torch.autocast(W.device.type, enabled=False)


def hyperspherical_energy(W, power='2', half_space=False):
    """Energy of the columns of ``W [d, N]`` (a scalar) or ``[T, d, N]`` (``[T]``);
    ``power`` one of ``'0' '1' '2' 'a0' 'a1' 'a2'``. See ``comhe.energy``."""
    with _full_precision(W):
        return _energy.hyperspherical_energy(_float(W), power, half_space)


def random_projection_term(W, draws):
    """RP: mean over ``draws [T, pd, d]`` of the half-space energy of ``P_t W``."""
    W = _float(W)
    with _full_precision(W):
        return _projections.random_projection_term(W, draws.to(W.dtype))


def learned_projection_term(variant, W, P, lr, lookahead_decay=False):
    """AP (``'angle'``) or AdvP (``'adversarial'``): the half-space energy of ``P' W``,
    ``P'`` the look-ahead from ``P [pd, d]`` at learning rate ``lr``."""
    W = _float(W)
    with _full_precision(W):
        return _projections.learned_projection_term(variant, W, P.to(W.dtype), lr, lookahead_decay)


def descend_projections(variant, Ps, Ws, lr, iters, form='auto'):
    """The Ps after ``iters`` gradient steps each on its own objective (``Ws`` fixed),
    layers of one shape stacked into one batched op; no gradient flows."""
    with torch.no_grad():
        return _projections.descend_projections(variant, list(Ps), [_float(W) for W in Ws], lr, iters, form)


def _layout_of(module):
    """The layout name of a Linear/Conv/ConvTranspose module (or a subclass), else None."""
    return next((layout for cls, layout in _MODULE_LAYOUTS.items() if isinstance(module, cls)), None)


class _Layer:
    """One regularised weight: where it lives, and its layout."""

    def __init__(self, name, module, param, layout):
        self.name, self.module, self.param, self.layout = name, module, param, layout

    @property
    def weight(self):
        return getattr(self.module, self.param)

    def matrix(self):
        return neurons(self.weight, self.layout)


def _find_layers(model, layers, neuron_axes, pd=None):
    """The ``_Layer``s of ``model``: those named in ``layers`` (module names or modules) and
    the parameters of ``neuron_axes``; by default every Linear/Conv/ConvTranspose, less
    those that cannot take the term (one neuron; fewer input dimensions than ``pd``),
    left out with a warning. A named layer that cannot take it is an error."""
    if not isinstance(model, nn.Module):
        raise TypeError(f'model must be a torch.nn.Module, got {type(model).__name__}')
    neuron_axes = dict(neuron_axes or {})
    named = dict(model.named_modules())
    found = []
    if layers is None:
        chosen = [(name, m) for name, m in named.items() if _layout_of(m) is not None
                  and getattr(m, 'weight', None) is not None]
    else:
        if isinstance(layers, (str, nn.Module)):
            layers = [layers]
        ids = {id(m): name for name, m in named.items()}
        chosen = []
        for item in layers:
            if isinstance(item, str):
                if item not in named:
                    raise ValueError(f'the model has no module named {item!r}; its layers: '
                                     f"{', '.join(n for n in named if n) or 'none'}")
                chosen.append((item, named[item]))
            elif isinstance(item, nn.Module) and id(item) in ids:
                chosen.append((ids[id(item)], item))
            else:
                raise ValueError(f'layers takes module names or modules of the model, got {item!r}')
    for name, module in chosen:
        name = name or '(model)'
        kind = _layout_of(module)
        if kind is None:
            raise ValueError(f'{name!r} is a {type(module).__name__}: its neurons cannot be told from its '
                             "type; name its weight in neuron_axes instead, e.g. {'" + name + ".weight': 0}")
        if kind.startswith('conv_transpose') and module.groups != 1:
            raise ValueError(f'{name!r}: a grouped {type(module).__name__} mixes the groups along its neuron '
                             'axis; leave it out (layers=...)')
        found.append(_Layer(name, module, 'weight', kind))
    params = dict(model.named_parameters())
    for pname, axis in neuron_axes.items():
        if pname not in params:
            raise ValueError(f'the model has no parameter named {pname!r}')
        owner, _, attr = pname.rpartition('.')
        module = named[owner]
        kind = _layout_of(module)
        if kind is not None and attr == 'weight' and LAYOUTS[kind][1] != axis % params[pname].dim():
            raise ValueError(f'{pname!r} belongs to a {type(module).__name__}, whose neurons are on axis '
                             f'{LAYOUTS[kind][1]}, not {axis}: drop it from neuron_axes')
        if not any(layer.module is module and layer.param == attr for layer in found):
            found.append(_Layer(pname, module, attr, kind if attr == 'weight' and kind else axis))
    names = [f'{layer.name}.{layer.param}' for layer in found]
    if len(set(names)) != len(names):
        raise ValueError(f'a layer is named twice: {names}')
    kept, left_out = [], []
    for layer in found:
        d, n = layer.matrix().shape
        why = (f'{n} neuron: the energy needs at least 2' if n < 2 else
               f'd={d} < pd={pd}: a projection must compress' if pd is not None and d < pd else None)
        if why is None:
            kept.append(layer)
        elif layers is None and layer.name not in neuron_axes:   # chosen by default
            left_out.append(f'{layer.name!r} ({why})')
        elif n < 2:
            raise ValueError(f'{layer.name!r} has {why}; leave it out (layers=[...])')
        else:
            _projections.check_projection(layer.matrix(), pd, repr(layer.name))
    if left_out:
        warnings.warn(f"left out of the regulariser: {', '.join(left_out)}; name the layers with "
                      'layers=[...] to choose them yourself (the paper gives the first layer plain MHE)',
                      stacklevel=_user_stacklevel())
    if not kept:
        raise ValueError('no layer to regularise: the model has no Linear or Conv layer that can take '
                         'the term; choose them with layers=[...] or neuron_axes={...}')
    return kept


def _user_stacklevel():
    """The stacklevel, for a warning raised in this module's caller, of the first frame
    outside this module (the user's line that made the regulariser)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    return level


def _number(name, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f'{name} must be a number, got {value!r}')
    return float(value)


class _Regularizer(nn.Module):
    """``weight * sum over the layers of term(W)``; the model is referenced, not owned.
    ``last_terms``: each layer's term (unweighted, detached) of the last call, for logging."""

    def __init__(self, model, weight, layers, neuron_axes, pd=None):
        super().__init__()
        self.weight = _number('weight', weight)
        self._layers = _find_layers(model, layers, neuron_axes, pd)   # a list: not submodules
        self.last_terms = []

    @property
    def layer_names(self):
        """The regularised layers, in the order of their terms."""
        return [layer.name for layer in self._layers]

    def _follow(self, Ws):
        """Move the buffers to the weights' device and compute dtype (a model moved or
        cast after the regulariser was made): each layer's P its layer's, the rest the first's."""
        owners = dict(zip(getattr(self, '_buffer_names', ()), Ws))
        for name, buf in self._buffers.items():
            W = owners.get(name, Ws[0])
            if buf is not None and buf.is_floating_point() and (buf.device != W.device or buf.dtype != W.dtype):
                self._buffers[name] = buf.to(device=W.device, dtype=W.dtype)

    def take_projection_steps(self, lr):
        """Nothing for MHE and RP (AP/AdvP take P's steps here), so one training loop
        serves every regulariser."""

    def forward(self):
        Ws = [layer.matrix() for layer in self._layers]
        with torch.autocast(Ws[0].device.type, enabled=False):
            self._follow(Ws)
            terms = self._terms(Ws)
            self.last_terms = [t.detach() for t in terms]
            return self.weight * torch.stack(terms).sum()

    def extra_repr(self):
        return f"weight={self.weight}, layers={self.layer_names}"


class MHE(_Regularizer):
    """``weight * sum E(W)``: full-space (``half_space=False``) or half-space MHE of each
    layer, kernel ``power`` one of ``'0' '1' '2' 'a0' 'a1' 'a2'``."""

    def __init__(self, model, power='2', half_space=False, weight=1.0, layers=None, neuron_axes=None):
        if power not in POWERS:
            raise ValueError(f"unknown power {power!r}; expected one of {', '.join(POWERS)}")
        super().__init__(model, weight, layers, neuron_axes)
        self.power, self.half_space = power, bool(half_space)

    def _terms(self, Ws):
        return [_energy.hyperspherical_energy(W, self.power, self.half_space) for W in Ws]


class RandomProjection(_Regularizer):
    """RP CoMHE: ``weight * sum`` over the layers of the mean half-space energy (power
    '2') of ``P_t W`` over ``T`` fresh Gaussian ``P_t [pd, d]`` per call, ``T = pn``, or
    ``N // pnd`` when ``pnd > 0``. Call ``k`` draws layer ``i``'s projections from a
    generator on the weights' device seeded by ``(seed, k, i)``: a given seed gives the
    same sequence, and ``state_dict`` carries ``k`` (so a resumed run draws on).

    Under ``torch.compile`` the draws run outside the graph (a graph break), the rest
    compiles."""

    def __init__(self, model, pd=40, pn=20, pnd=0, weight=1.0, seed=0, layers=None, neuron_axes=None):
        pd = _projections.static_int('pd', pd)
        super().__init__(model, weight, layers, neuron_axes, pd)
        self.pd, self.pn = pd, _projections.static_int('pn', pn)
        self.pnd, self.seed = _projections.static_int('pnd', pnd, 0), _projections.static_int('seed', seed, 0)
        for layer in self._layers:
            _projections.checked_num_projections(layer.matrix().shape[1], self.pn, self.pnd, repr(layer.name))
        self.calls = 0

    def get_extra_state(self):
        return {'calls': self.calls}

    def set_extra_state(self, state):
        self.calls = int(state['calls'])

    @torch.compiler.disable
    def draws(self, Ws):
        """This call's ``[T, pd, d]`` Gaussians of each layer (advances the count)."""
        out = []
        for i, W in enumerate(Ws):
            seed = int(np.random.SeedSequence([self.seed, self.calls, i]).generate_state(1, np.uint64)[0])
            generator = torch.Generator(device=W.device).manual_seed(seed)
            T = num_projections(W.shape[1], self.pn, self.pnd)
            out.append(torch.randn((T, self.pd, W.shape[0]), generator=generator, device=W.device,
                                   dtype=W.dtype))
        self.calls += 1
        return out

    def _terms(self, Ws):
        return [_projections.random_projection_term(W, P) for W, P in zip(Ws, self.draws(Ws))]

    def extra_repr(self):
        return f'pd={self.pd}, pn={self.pn}, pnd={self.pnd}, seed={self.seed}, ' + super().extra_repr()


class _LearnedProjection(_Regularizer):
    variant = None

    def __init__(self, model, pd, iters, weight, seed, form, lookahead_decay, layers, neuron_axes):
        pd = _projections.static_int('pd', pd)
        super().__init__(model, weight, layers, neuron_axes, pd)
        _projections.check_form(form)
        self.pd, self.iters = pd, _projections.static_int('iters', iters, 0)
        self.seed, self.form = _projections.static_int('seed', seed, 0), form
        self.lookahead_decay = bool(lookahead_decay)
        generator = torch.Generator().manual_seed(seed)
        first = self._layers[0].matrix()
        self._buffer_names = []
        for layer in self._layers:
            W = layer.matrix()
            P = torch.randn((pd, W.shape[0]), generator=generator, dtype=torch.float64)
            name = 'P_' + re.sub(r'\W', '_', layer.name)
            if name in self._buffer_names:
                raise ValueError(f'two layers map to the buffer name {name}')
            self.register_buffer(name, P.to(device=W.device, dtype=W.dtype))
            self._buffer_names.append(name)
        # The learning rate of the last P steps, which the look-ahead uses.
        self.register_buffer('learning_rate', torch.zeros((), device=first.device, dtype=first.dtype))

    def projection(self, layer_name):
        """The ``P [pd, d]`` of a layer (by the name in ``layer_names``)."""
        if layer_name not in self.layer_names:
            raise ValueError(f"no layer {layer_name!r} here; the layers: {', '.join(self.layer_names)}")
        return getattr(self, self._buffer_names[self.layer_names.index(layer_name)])

    @property
    def projections(self):
        return [getattr(self, name) for name in self._buffer_names]

    def take_projection_steps(self, lr):
        """``iters`` gradient steps of every layer's P on its own objective at learning
        rate ``lr`` (a number, or an optimizer: its first group's current lr), on the
        current weights; the look-ahead of the next ``reg()`` then uses ``lr`` too.
        Call it once per training step, before computing the loss."""
        if isinstance(lr, torch.optim.Optimizer):
            lr = lr.param_groups[0]['lr']
        if isinstance(lr, torch.Tensor):
            lr = lr.detach()
        elif isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating, np.integer)):
            raise TypeError(f'lr must be a number or a torch.optim.Optimizer (its current lr is taken), '
                            f'got {type(lr).__name__}; for a scheduler pass its optimizer')
        Ws = [layer.matrix().detach() for layer in self._layers]
        with torch.no_grad(), torch.autocast(Ws[0].device.type, enabled=False):
            self._follow(Ws)
            self.learning_rate.fill_(lr)
            if self.iters:
                stepped = _projections.descend_projections(self.variant, self.projections, Ws,
                                                           self.learning_rate, self.iters, self.form)
                for P, new in zip(self.projections, stepped):
                    P.copy_(new)

    def objectives(self):
        """P's own objective of each layer at the current P (for logging)."""
        with torch.no_grad():
            return [_projections.p_objective(self.variant, layer.matrix(), P.to(layer.matrix().dtype))
                    for layer, P in zip(self._layers, self.projections)]

    def _terms(self, Ws):
        return [_projections.learned_projection_term(self.variant, W, P, self.learning_rate,
                                                     self.lookahead_decay)
                for W, P in zip(Ws, self.projections)]

    def extra_repr(self):
        return f'pd={self.pd}, iters={self.iters}, form={self.form!r}, ' + super().extra_repr()


class AngleProjection(_LearnedProjection):
    """AP CoMHE: the half-space energy of ``P' W``, P learned to preserve the neurons'
    angles, ``P' = P - lr dA/dP`` with ``A`` the angle loss (the release's look-ahead;
    ``lookahead_decay=True`` adds P's scaled weight decay, as docs/protocol.md writes
    it). ``P`` starts N(0, 1) from ``seed``; ``iters`` steps per ``take_projection_steps``."""
    variant = 'angle'

    def __init__(self, model, pd=30, iters=1, weight=1.0, seed=0, form='auto', lookahead_decay=False,
                 layers=None, neuron_axes=None):
        super().__init__(model, pd, iters, weight, seed, form, lookahead_decay, layers, neuron_axes)


class AdversarialProjection(_LearnedProjection):
    """AdvP CoMHE: the half-space energy of ``P' W``, P learned to maximise the projected
    energy, ``P' = P + lr dE(P W)/dP``; the paper's setting is ``iters=10``."""
    variant = 'adversarial'

    def __init__(self, model, pd=30, iters=10, weight=1.0, seed=0, form='auto', layers=None,
                 neuron_axes=None):
        super().__init__(model, pd, iters, weight, seed, form, False, layers, neuron_axes)
