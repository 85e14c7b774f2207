"""One phase of the LOA-induced network = one iteration (lines 3-16) of Algorithm 1."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import keras
import tensorflow as tf

from loa_meta.layers.algorithm1_config import FIELD_NAMES, Algorithm1Config, Algorithm1Constants
from loa_meta.layers.complex_ops import real_to_complex
from loa_meta.layers.smoothed_relu import cast_like
from loa_meta.physics.operators import LinearOperator
from loa_meta.validation import check_positive

# Branch codes reported in the diagnostics.
BRANCH_U = 0  # line 6: x_{t+1} = u_{t+1}
BRANCH_V = 1  # line 10: x_{t+1} = v_{t+1} (after `backtracks` reductions of alpha)
BRANCH_KEPT = 2  # line-search budget exhausted: x_{t+1} = x_t (still a descent step)
BRANCH_INACTIVE = -1  # sample terminated earlier by line 16: x_{t+1} = x_t


def _sqnorm(z: tf.Tensor) -> tf.Tensor:
    """||z||^2 per sample over the image axes, shape (B,)."""
    return tf.reduce_sum(tf.math.real(z) ** 2 + tf.math.imag(z) ** 2, axis=[-2, -1])


def _img(v: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """Per-sample real (B,) -> complex (B, 1, 1) for broadcasting against images."""
    return real_to_complex(v, dtype)[:, tf.newaxis, tf.newaxis]


def regularizer_value_and_grad(regularizer, x: tf.Tensor, eps, grad_mode: str = "explicit", kernels=None):
    """(r_eps(x), grad r_eps(x)) by the explicit chain rule (Eq. A2) or by tf.GradientTape.

    ``kernels``: the regulariser's block kernels (``LearnedRegularizer.block_kernels``) if built once
    by the caller for several evaluations.
    """
    kw = {} if kernels is None else {"kernels": kernels}
    if grad_mode == "explicit":
        return regularizer.value_and_grad(x, eps, **kw)
    xr, xi = tf.math.real(x), tf.math.imag(x)
    with tf.GradientTape() as tape:
        tape.watch([xr, xi])
        v = regularizer.value(tf.complex(xr, xi), eps, **kw)
        total = tf.reduce_sum(v)  # samples are independent, so this gives per-sample gradients
    gr, gi = tape.gradient(total, [xr, xi])
    return v, tf.complex(gr, gi)


class _Energy:
    """phi_eps(v) = f(v) + kappa r_eps(v) of one iteration (fixed y, kappa and eps_t), per sample ``(B,)``.

    ``kappa`` is real ``(B,)``, ``kap`` the same as complex ``(B, 1, 1)``; ``kernels`` as in
    :func:`regularizer_value_and_grad`; ``batch`` = B (a scalar tensor, computed once per iteration).
    """

    def __init__(self, regularizer, operator: LinearOperator, y, kappa, kap, eps, grad_mode: str, kernels=None,
                 batch=None):
        self.regularizer, self.operator, self.y = regularizer, operator, y
        self.kappa, self.kap, self.eps = kappa, kap, eps
        self.grad_mode, self.kernels, self.batch = grad_mode, kernels, batch

    def value(self, v):
        """phi_eps(v)."""
        kw = {} if self.kernels is None else {"kernels": self.kernels}
        return self.operator.data_term(v, self.y) + self.kappa * self.regularizer.value(v, self.eps, **kw)

    def grad_r(self, v):
        """grad r_eps(v) (without kappa)."""
        return regularizer_value_and_grad(self.regularizer, v, self.eps, self.grad_mode, self.kernels)[1]

    def value_and_grad(self, v):
        """(phi_eps(v), grad phi_eps(v))."""
        r, gr = regularizer_value_and_grad(self.regularizer, v, self.eps, self.grad_mode, self.kernels)
        return self.operator.data_term(v, self.y) + self.kappa * r, self.operator.data_grad(v, self.y) + self.kap * gr

    def at_x(self, x, carry=None):
        """phi_eps(x), grad phi_eps(x) for line 5: from ``carry`` (see ``LOAPhase.step``) for every
        sample whose eps is unchanged, computed (for exactly the others) if any sample's eps changed."""
        if carry is None:
            return self.value_and_grad(x)
        cdt, rdt = x.dtype, x.dtype.real_dtype
        c_phi, c_grad, c_eps = carry
        c_phi = tf.broadcast_to(tf.cast(c_phi, rdt), [self.batch])
        c_grad = tf.cast(c_grad, cdt)
        stale = tf.not_equal(tf.broadcast_to(tf.cast(c_eps, rdt), [self.batch]), self.eps)

        def recompute():
            p, g = self.value_and_grad(x)
            return tf.where(stale, p, c_phi), tf.where(stale[:, tf.newaxis, tf.newaxis], g, c_grad)

        return tf.cond(tf.reduce_any(stale), recompute, lambda: (tf.identity(c_phi), tf.identity(c_grad)))


def _line_3(operator: LinearOperator, x, y, alpha):
    """Line 3 (Eq. 6a): ``(grad f(x), z = x - alpha grad f(x))``."""
    grad_f = operator.data_grad(x, y)
    return grad_f, x - real_to_complex(alpha, x.dtype) * grad_f


def _line_4(z, grad_r, tau, kap):
    """Line 4 (Eq. 8, R = kappa r): ``u = z - tau kappa grad r_eps(z)``."""
    return z - real_to_complex(tau, z.dtype) * kap * grad_r


@keras.saving.register_keras_serializable(package="loa_meta")
class LOAPhase(Algorithm1Constants, keras.layers.Layer):
    """One iteration of Algorithm 1 (lines 3-16), applied per sample.

    With phi_eps(x) = f(x) + kappa r_eps(x), f(x) = 1/2 ||A x - y||^2 and R = kappa r (Section 3.2):

    * line 3: ``z = x - alpha grad f(x)``  (Eq. 6a)
    * line 4: ``u = z - tau kappa grad r_eps(z)``  (Eq. 8)
    * line 5: accept ``u`` if ``||grad phi(x)|| <= a ||u - x||`` and
      ``phi(u) - phi(x) <= -||u - x||^2 / a``
    * lines 8-13: otherwise ``v = x - alpha' grad phi(x)`` (Eq. 10), ``alpha' <- rho alpha'`` until
      ``phi(v) - phi(x) <= -||v - x||^2 / a``; at most ``max_backtracks`` reductions, after which the
      sample keeps ``x_{t+1} = x_t`` (branch 2; still monotone) -- a bounded version of the paper's
      unbounded line search.
    * line 15: ``eps <- gamma eps`` if ``||grad phi_eps(x_{t+1})|| < sigma gamma eps``
    * line 16: samples with ``sigma eps_t < eps_tol`` become inactive (stay fixed from then on).

    Every condition is evaluated per sample with ``tf.where``, so a batch gives exactly what its
    samples give one by one. The v-branch is only computed when some active sample needs it
    (``tf.cond``); it is differentiable (``tf.while_loop``), works in ``tf.function`` and under
    nested ``GradientTape``s. All tests are evaluated on values with ``stop_gradient`` (the branch
    choice is piecewise constant).

    Code map: :meth:`step` runs one iteration sequentially: lines 3-4 (``_line_3``, ``_line_4``),
    then :meth:`_decide`, the decisions: :meth:`_line_5`, :meth:`_lines_8_13` (line search), the
    choice of lines 6/10, :meth:`_line_15` (eps), :meth:`_line_16` (active). :meth:`update` replays
    an iteration with those decisions given, straight-line and differentiable (lines 3-4, 10 via
    :meth:`_line_10_replayed`, 15 via :meth:`_eps_next`).

    Learnable weights ``alpha`` and ``tau`` (scalars) are stored as float variables and used through
    ``|.|`` so that step sizes stay positive whatever the optimiser does (``tau`` is learned
    directly, Section 5.2; beta of Eq. 8 is implicit).

    The constants of Algorithm 1 (a, sigma, rho, gamma, eps_tol, max_backtracks, safeguard,
    grad_mode) are one frozen :class:`Algorithm1Config`, readable as ``phase.algorithm1_config``
    and, one by one, as ``phase.a``, ``phase.sigma``, ...

    Args:
      alpha0: initial step size alpha (paper: 0.01).
      tau0: initial step size tau (paper: 0.01).
      config: the :class:`Algorithm1Config` (validated already; a :class:`~loa_meta.models.LOANet`
        passes the same one to all its phases).
      **kwargs: standard layer arguments; without ``config``, also the constants by name
        (``a=1e5, rho=0.9, ...``: the older form, and the form of saved configs), from which a
        config is made (defaults as in :class:`Algorithm1Config`).
    """

    def __init__(self, alpha0: float = 0.01, tau0: float = 0.01, config: Optional[Algorithm1Config] = None, **kwargs):
        constants = {name: kwargs.pop(name) for name in FIELD_NAMES if name in kwargs}
        super().__init__(**kwargs)
        self.alpha0 = check_positive(alpha0, "alpha0")
        self.tau0 = check_positive(tau0, "tau0")
        self.algorithm1_config = Algorithm1Config.resolve(config, **constants)

    def build(self, input_shape=None):
        self.alpha = self.add_weight(
            name="alpha", shape=(), initializer=keras.initializers.Constant(self.alpha0), trainable=True
        )
        self.tau = self.add_weight(
            name="tau", shape=(), initializer=keras.initializers.Constant(self.tau0), trainable=True
        )

    def step_sizes(self, real_dtype: tf.DType = tf.float32) -> Tuple[tf.Tensor, tf.Tensor]:
        """The positive step sizes (|alpha|, |tau|) actually used."""
        if not self.built:
            self.build(None)
        return (
            tf.cast(tf.abs(tf.convert_to_tensor(self.alpha)), real_dtype),
            tf.cast(tf.abs(tf.convert_to_tensor(self.tau)), real_dtype),
        )

    def call(self, x, y, mask, kappa, eps, active, regularizer=None):
        """Keras entry point; see :meth:`step` (the operator is built from ``mask``)."""
        from loa_meta.physics.operators import SingleCoilOperator

        return self.step(regularizer, SingleCoilOperator(mask), x, y, kappa, eps, active)

    def _inputs(self, x, y, kappa, eps, step_sizes):
        """Shared preamble of :meth:`step` and :meth:`update`: dtypes, per-sample kappa and eps
        ``(B,)``, the step sizes used (|alpha|, |tau|) and kappa as a complex ``(B, 1, 1)``."""
        x = tf.convert_to_tensor(x)
        if not x.dtype.is_complex:
            raise TypeError(f"Argument `x` must be a complex image (B, H, W), but received dtype: {x.dtype.name}")
        cdt, rdt = x.dtype, x.dtype.real_dtype
        batch = tf.shape(x)[0]
        kappa = tf.broadcast_to(cast_like(kappa, rdt), [batch])
        eps = tf.broadcast_to(cast_like(eps, rdt), [batch])
        if step_sizes is None:
            alpha, tau = self.step_sizes(rdt)
        else:
            alpha, tau = (tf.cast(tf.abs(v), rdt) for v in step_sizes)
        return x, tf.cast(y, cdt), kappa, eps, alpha, tau, _img(kappa, cdt)

    # -- Algorithm 1, one iteration, sequentially (the reference; the plan of the training engine) --
    def step(
        self,
        regularizer,
        operator: LinearOperator,
        x: tf.Tensor,
        y: tf.Tensor,
        kappa,
        eps,
        active,
        compute_diagnostics: bool = True,
        eps_tol=None,
        step_sizes=None,
        carry=None,
        return_carry: bool = False,
        kernels=None,
    ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor, Dict[str, tf.Tensor]]:
        """Run lines 3-16 of Algorithm 1 once: lines 3-4 here, then :meth:`_decide` (lines 5-16).

        Args:
          regularizer: the shared :class:`LearnedRegularizer` (r_eps and its gradient).
          operator: the acquisition operator A (e.g. ``SingleCoilOperator(mask)``).
          x: current iterate x_t, complex ``(B, H, W)``.
          y: k-space data, complex ``(B, H, W)``.
          kappa: regularisation weight per sample ``(B,)`` (sigmoid(omega_task)) or scalar.
          eps: smoothing parameter eps_t per sample ``(B,)`` or scalar.
          active: bool ``(B,)``; inactive samples (terminated by line 16) are returned unchanged.
          compute_diagnostics: with ``safeguard=False`` the energies are only evaluated if True.
          eps_tol: overrides the layer's line-16 tolerance (used by the solver mode of LOANet).
          step_sizes: optional ``(alpha, tau)`` tensors used instead of this layer's weights (lets
            one compiled step serve every phase of a model).
          carry: optional ``(phi, grad_phi, eps_c)`` returned by the previous step
            (``return_carry=True``): phi_{eps_c}(x) ``(B,)`` and grad phi_{eps_c}(x) ``(B, H, W)`` at
            this step's ``x``, evaluated at line 15 of the previous iteration. They are reused for
            line 5 for every sample whose eps is unchanged (``eps_c == eps``); if any sample's eps
            changed, phi and grad phi are recomputed and taken for exactly those samples, so each
            sample's result does not depend on the rest of the batch. ``eps_c = NaN`` forces a
            recomputation (a valid start value).
          return_carry: also return the carry for the next step.
          kernels: the regulariser's block kernels, built once by a caller that runs several phases
            (each evaluation of r_eps builds them otherwise; same values either way).

        Returns:
          ``(x_next, eps_next, active_next, diagnostics)`` (plus ``carry_next`` if
          ``return_carry``); diagnostics holds ``(B,)`` tensors
          ``phi`` (phi_eps_t(x_t)), ``phi_next`` (phi_eps_t(x_{t+1})), ``branch`` (0 = u, 1 = v,
          2 = line search exhausted and x kept, -1 = inactive), ``backtracks`` (number of alpha
          reductions), ``eps`` (eps_t), ``grad_norm`` (||grad phi_eps_t(x_t)||).
        """
        x, y, kappa, eps, alpha, tau, kap = self._inputs(x, y, kappa, eps, step_sizes)
        batch = tf.shape(x)[0]
        active = tf.broadcast_to(tf.cast(active, tf.bool), [batch])
        phi = _Energy(regularizer, operator, y, kappa, kap, eps, self.grad_mode, kernels, batch)
        grad_f, z = _line_3(operator, x, y, alpha)
        u = _line_4(z, phi.grad_r(z), tau, kap)
        if self.safeguard:
            out, carry_next = self._decide(phi, x, u, eps, active, alpha, carry, eps_tol)
        else:
            out, carry_next = self._take_u(phi, x, u, eps, active, carry, compute_diagnostics)
        return out + (carry_next,) if return_carry else out

    def _take_u(self, phi, x, u, eps, active, carry, compute_diagnostics):
        """``safeguard=False`` (the authors' script): x_{t+1} = u_{t+1}, eps fixed, lines 5-16 skipped."""
        x_next = tf.where(active[:, tf.newaxis, tf.newaxis], u, x)
        diag = {"branch": tf.where(active, BRANCH_U, BRANCH_INACTIVE), "backtracks": tf.zeros([phi.batch], tf.int32),
                "eps": eps, "reduce_eps": tf.zeros([phi.batch], tf.bool)}
        carry_next = carry
        if compute_diagnostics:
            phi_x, grad_phi = phi.at_x(x, carry)
            phi_next, grad_next = phi.value_and_grad(x_next)
            diag.update(phi=phi_x, phi_next=phi_next, grad_norm=tf.sqrt(tf.stop_gradient(_sqnorm(grad_phi))))
            carry_next = (phi_next, grad_next, eps)
        return (x_next, eps, active, diag), carry_next

    def _decide(self, phi, x, u, eps, active, alpha, carry, eps_tol):
        """Lines 5-16 with the safeguard: the decisions of Algorithm 1 and the x_{t+1} they select.

        phi and grad phi at x come from the carry (line 15 of the previous iteration) where valid;
        every test is evaluated on values with ``stop_gradient`` (the decisions are piecewise
        constant). Returns ``((x_next, eps_next, active_next, diagnostics), carry_next)``.
        """
        phi_x, grad_phi = phi.at_x(x, carry)
        accept_u, phi_u, grad_phi_u, g2 = self._line_5(phi, x, u, phi_x, grad_phi)
        need_v = active & ~accept_u
        v, phi_v, accept_v, backtracks, grad_phi_v = self._lines_8_13(phi, x, phi_x, grad_phi, alpha, need_v)
        # lines 6 and 10 (a sample whose line search is exhausted keeps x_t, branch 2)
        take_u = active & accept_u
        take_v = need_v & accept_v
        take_u_img, take_v_img = take_u[:, tf.newaxis, tf.newaxis], take_v[:, tf.newaxis, tf.newaxis]
        x_next = tf.where(take_u_img, u, tf.where(take_v_img, v, x))
        phi_next = tf.where(take_u, phi_u, tf.where(take_v, phi_v, phi_x))
        branch = tf.where(
            ~active, BRANCH_INACTIVE, tf.where(accept_u, BRANCH_U, tf.where(accept_v, BRANCH_V, BRANCH_KEPT))
        )
        # grad phi_{eps_t}(x_{t+1}) for line 15, already evaluated for each branch
        grad_phi_next = tf.where(take_u_img, grad_phi_u, tf.where(take_v_img, grad_phi_v, grad_phi))
        reduce_eps, eps_next = self._line_15(grad_phi_next, eps, active)
        active_next = self._line_16(eps, active, eps_tol)
        diag = {
            "phi": phi_x,
            "phi_next": phi_next,
            "branch": branch,
            "backtracks": tf.where(need_v, backtracks, 0),
            "eps": eps,
            "reduce_eps": reduce_eps,
            "grad_norm": tf.sqrt(g2),
        }
        return (x_next, eps_next, active_next, diag), (phi_next, grad_phi_next, eps)

    def _line_5(self, phi, x, u, phi_x, grad_phi):
        """Line 5: accept u if ``||grad phi(x)|| <= a ||u - x||`` and ``phi(u) - phi(x) <= -||u - x||^2 / a``.

        Compares squared norms (the same test without a sqrt). phi and grad phi at u are evaluated
        together: u is the usual x_{t+1}, whose gradient line 15 needs. Returns
        ``(accept_u, phi(u), grad phi(u), ||grad phi(x)||^2)``.
        """
        phi_u, grad_phi_u = phi.value_and_grad(u)
        a = cast_like(self.a, x.dtype.real_dtype)
        du2 = tf.stop_gradient(_sqnorm(u - x))
        g2 = tf.stop_gradient(_sqnorm(grad_phi))
        accept_u = (g2 <= a * a * du2) & (tf.stop_gradient(phi_u - phi_x) <= -du2 / a)
        return accept_u, phi_u, grad_phi_u, g2

    def _lines_8_13(self, phi, x, phi_x, grad_phi, alpha, need_v):
        """Lines 8-13, only computed when some active sample needs them (``tf.cond``).

        ``v = x - alpha' grad phi(x)`` (Eq. 10) with ``alpha' <- rho alpha'`` (line 12) until
        ``phi(v) - phi(x) <= -||v - x||^2 / a`` (line 9), at most ``max_backtracks`` reductions
        (a differentiable ``tf.while_loop``). Returns ``(v, phi(v), accept_v, backtracks,
        grad phi(v))`` (``accept_v`` False where the search was exhausted or not needed).
        """
        batch = phi.batch
        zeros_i = tf.zeros([batch], tf.int32)
        cdt, rdt = x.dtype, x.dtype.real_dtype
        a, rho = cast_like(self.a, rdt), cast_like(self.rho, rdt)

        def descent_ok(v, phi_v):  # line 9
            return tf.stop_gradient(phi_v - phi_x) <= -tf.stop_gradient(_sqnorm(v - x)) / a

        def v_branch():
            step = tf.fill([batch], alpha)
            v0 = x - _img(step, cdt) * grad_phi
            phi_v0 = phi.value(v0)
            ok0 = ~need_v | descent_ok(v0, phi_v0)

            def cond(k, step, v, phi_v, ok, nbt):
                return tf.reduce_any(~ok)

            def body(k, step, v, phi_v, ok, nbt):
                step = tf.where(ok, step, rho * step)
                v_new = x - _img(step, cdt) * grad_phi
                phi_new = phi.value(v_new)
                v = tf.where(ok[:, tf.newaxis, tf.newaxis], v, v_new)
                phi_v = tf.where(ok, phi_v, phi_new)
                nbt = nbt + tf.cast(~ok, tf.int32)
                return k + 1, step, v, phi_v, ok | descent_ok(v, phi_v), nbt

            vector = tf.TensorShape([None])
            _, _, v, phi_v, ok, nbt = tf.while_loop(
                cond,
                body,
                (tf.constant(0), step, v0, phi_v0, ok0, zeros_i),
                shape_invariants=(tf.TensorShape([]), vector, tf.TensorShape([None, None, None]), vector, vector, vector),
                maximum_iterations=self.max_backtracks,
            )
            # grad phi at the accepted v, for line 15 (with the same eps_t)
            _, grad_v = phi.value_and_grad(v)
            return v, phi_v, ok & need_v, nbt, grad_v

        def no_v_branch():
            return x, phi_x, tf.zeros([batch], tf.bool), zeros_i, grad_phi

        return tf.cond(tf.reduce_any(need_v), v_branch, no_v_branch)

    def _line_15(self, grad_phi_next, eps, active):
        """Line 15: ``eps <- gamma eps`` if ``||grad phi_{eps_t}(x_{t+1})|| < sigma gamma eps_t``.

        Returns ``(reduce_eps, eps_next)``.
        """
        rdt = eps.dtype
        thresh = cast_like(self.sigma * self.gamma, rdt) * tf.stop_gradient(eps)
        reduce_eps = active & (tf.stop_gradient(_sqnorm(grad_phi_next)) < thresh * thresh)
        return reduce_eps, self._eps_next(eps, reduce_eps)

    def _eps_next(self, eps, reduce_eps):
        """The update of line 15 for the decision ``reduce_eps``: gamma eps_t or eps_t."""
        return tf.where(tf.cast(reduce_eps, tf.bool), cast_like(self.gamma, eps.dtype) * eps, eps)

    def _line_16(self, eps, active, eps_tol):
        """Line 16: a sample with ``sigma eps_t < eps_tol`` becomes inactive (tested on eps_t, as
        written); ``eps_tol`` (None = the config's) is the solver mode's tolerance."""
        rdt = eps.dtype
        tol = cast_like(self.eps_tol if eps_tol is None else eps_tol, rdt)
        return active & ~(cast_like(self.sigma, rdt) * tf.stop_gradient(eps) < tol)

    # -- the same iteration replayed with planned decisions (the differentiable update) -----
    def update(
        self,
        regularizer,
        operator: LinearOperator,
        x: tf.Tensor,
        y: tf.Tensor,
        kappa,
        eps,
        decision: Dict[str, tf.Tensor],
        step_sizes=None,
        kernels=None,
    ) -> Tuple[tf.Tensor, tf.Tensor]:
        """Lines 3-15 of Algorithm 1 *replayed* with planned decisions: straight-line and differentiable.

        Every branch decision of Algorithm 1 is piecewise constant in the weights, so the training
        engine first runs :meth:`step` without recording gradients (the *plan*), then computes x_T
        again with this method, which takes the decisions as tensors and contains no ``tf.cond`` /
        ``tf.while_loop``:

            x_{t+1} = where(u, u_{t+1}, where(v, x_t - alpha_t rho^k grad phi(x_t), x_t))
            eps_{t+1} = where(reduce, gamma eps_t, eps_t)

        with ``alpha_t rho^k`` built by k successive multiplications by rho, exactly as line 12 does.
        A sample needs grad r_eps at z_t (line 4) or, if it takes v, at x_t (grad phi(x_t) of line 10),
        never both, so one evaluation on ``where(v, x_t, z_t)`` serves the whole batch (static shapes,
        no gathered sub-batch). The result equals :meth:`step`'s ``(x_next, eps_next)`` for the same
        decisions (same operations on the same values), and so do its first- and second-order gradients.

        Args:
          regularizer, operator, x, y, kappa, eps, step_sizes, kernels: as in :meth:`step`.
          decision: ``{"branch", "backtracks", "reduce_eps"}`` ``(B,)`` tensors from :meth:`step`'s
            diagnostics (branch codes ``BRANCH_*``).

        Returns:
          ``(x_next, eps_next)``.
        """
        x, y, kappa, eps, alpha, tau, kap = self._inputs(x, y, kappa, eps, step_sizes)
        branch = tf.convert_to_tensor(decision["branch"])
        phi = _Energy(regularizer, operator, y, kappa, kap, eps, self.grad_mode, kernels)
        grad_f, z = _line_3(operator, x, y, alpha)
        if not self.safeguard:  # line 4 only
            u = _line_4(z, phi.grad_r(z), tau, kap)
            return tf.where((branch != BRANCH_INACTIVE)[:, tf.newaxis, tf.newaxis], u, x), eps

        take_u = (branch == BRANCH_U)[:, tf.newaxis, tf.newaxis]
        take_v = (branch == BRANCH_V)[:, tf.newaxis, tf.newaxis]
        grad_r_at = phi.grad_r(tf.where(take_v, x, z))  # grad r_eps(x_t) where v is taken, else grad r_eps(z_t)
        u = _line_4(z, grad_r_at, tau, kap)
        v = self._line_10_replayed(x, grad_f + kap * grad_r_at, alpha, decision["backtracks"])
        x_next = tf.where(take_u, u, tf.where(take_v, v, x))
        # line 15 (the test itself was taken by the plan)
        return x_next, self._eps_next(eps, decision["reduce_eps"])

    def _line_10_replayed(self, x, grad_phi, alpha, backtracks):
        """v = x - alpha rho^k grad phi(x) for the planned k (lines 8-12), alpha rho^k as k successive
        multiplications by rho, exactly as the line search computes it (a left-to-right cumulative
        product; tf.pow would differ by up to ~5e-5 at k = 40)."""
        rdt = alpha.dtype
        k = tf.cast(backtracks, tf.int32)
        table = tf.math.cumprod(tf.concat([alpha[tf.newaxis], tf.fill([self.max_backtracks], cast_like(self.rho, rdt))], 0))
        return x - _img(tf.gather(table, k), x.dtype) * grad_phi

    def get_config(self):
        return {
            **super().get_config(),
            "alpha0": self.alpha0,
            "tau0": self.tau0,
            **self.algorithm1_config.as_dict(),
        }
