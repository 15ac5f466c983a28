"""NumPy references written straight from docs/protocol.md sections 1 and 3: explicit
loops over pairs and an explicit ``[W, -W]`` for the half space. Slow on
purpose; only for checking the TensorFlow ops on small matrices."""
import math

import numpy as np


def kernel(c, power):
    if power == '0':
        return -math.log(2 - 2 * c)
    if power == '1':
        return (2 - 2 * c) ** -0.5
    if power == '2':
        return (2 - 2 * c) ** -1
    angle = math.acos(c) / math.pi + 1e-4
    if power == 'a0':
        return -math.log(angle)
    if power == 'a1':
        return angle ** -1
    if power == 'a2':
        return angle ** -2
    raise ValueError(power)


def cosine(W):
    W = np.asarray(W, np.float64)
    norms = [math.sqrt(float(np.sum(W[:, i] ** 2)) + 1e-4) for i in range(W.shape[1])]
    n = W.shape[1]
    C = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            C[i, j] = float(W[:, i] @ W[:, j]) / (norms[i] * norms[j])
    return C


def energy(W, power='2', half_space=False):
    W = np.asarray(W, np.float64)
    if half_space:
        W = np.concatenate([W, -W], axis=1)
    C = cosine(W)
    n = W.shape[1]
    total = 0.0
    for i in range(n):
        for j in range(i + 1, n):
            total += kernel(C[i, j], power)
    return total / (n * (n - 1) / 2)


def angle_objective(W, P):
    """AP's L_P: ||C(P W) - C(W)||_F + 1e-3 * 5e-4 * sum(P^2) / 2."""
    diff = cosine(np.asarray(P, np.float64) @ W) - cosine(W)
    return math.sqrt(float(np.sum(diff ** 2))) + 1e-3 * 5e-4 * float(np.sum(np.square(P))) / 2


def finite_difference_grad(f, P, h=1e-6):
    """Central differences of a scalar function of the matrix P."""
    P = np.array(P, np.float64)
    grad = np.zeros_like(P)
    for idx in np.ndindex(P.shape):
        up, down = P.copy(), P.copy()
        up[idx] += h
        down[idx] -= h
        grad[idx] = (f(up) - f(down)) / (2 * h)
    return grad


P_DECAY = 1e-3 * 5e-4   # P's weight decay in its own objective (docs/protocol.md section 3)


def random_projection_term(W, draws):
    """RP: the mean over the draws P_t of the half-space energy of P_t W."""
    W = np.asarray(W, np.float64)
    return float(np.mean([energy(np.asarray(P, np.float64) @ W, '2', True) for P in draws]))


def angle_loss(W, P):
    """AP's angle loss alone: ||C(P W) - C(W)||_F."""
    return math.sqrt(float(np.sum((cosine(np.asarray(P, np.float64) @ W) - cosine(W)) ** 2)))


def p_objective(variant, W, P):
    """P's own objective: AP's L_P, or AdvP's -E(P W) + P's decay."""
    W = np.asarray(W, np.float64)
    if variant == 'angle':
        return angle_objective(W, P)
    return -energy(np.asarray(P, np.float64) @ W, '2') + P_DECAY * float(np.sum(np.square(P))) / 2


def lookahead(variant, W, P, lr, lookahead_decay=False):
    """P' = P - lr dA/dP (AP; with the decay: dL_P/dP) or P + lr dE(P W)/dP (AdvP),
    the gradients by central differences."""
    W, P = np.asarray(W, np.float64), np.asarray(P, np.float64)
    if variant == 'angle':
        grad = finite_difference_grad(lambda p: angle_loss(W, p), P)
        return P - lr * (grad + P_DECAY * P if lookahead_decay else grad)
    return P + lr * finite_difference_grad(lambda p: energy(p @ W, '2'), P)


def learned_projection_term(variant, W, P, lr, lookahead_decay=False):
    """AP/AdvP: the half-space energy of P' W."""
    return energy(lookahead(variant, W, P, lr, lookahead_decay) @ np.asarray(W, np.float64), '2', True)


def descend(variant, P, W, lr, iters):
    """P after ``iters`` plain gradient steps on its own objective (gradients by central
    differences)."""
    P = np.asarray(P, np.float64)
    for _ in range(iters):
        P = P - lr * finite_difference_grad(lambda p: p_objective(variant, W, p), P)
    return P
