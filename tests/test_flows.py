"""Flow contract tests: log-dets against autograd Jacobians, invertibility constraint, identity at zero, and the
flow bottleneck's Monte Carlo KL."""

import pytest
import torch
from torch.autograd.functional import jacobian
from torch.distributions import Normal

from genlab.models.bottlenecks import FlowGaussianBottleneck, GaussianBottleneck
from genlab.models.flows import IAFFlow, PlanarFlow

DIM = 4
FLOWS = {
    "planar": lambda: PlanarFlow(DIM),
    "iaf": lambda: IAFFlow(DIM, 12, 3),
    "iaf_reversed": lambda: IAFFlow(DIM, 12, 3, reverse=True),
}


def randomise(flow: torch.nn.Module) -> torch.nn.Module:
    """IAF starts as the identity (zero output layer); give it generic parameters for the Jacobian tests."""
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.5)
    return flow.double()


@pytest.mark.parametrize("name", FLOWS)
def test_log_det_equals_log_abs_det_of_autograd_jacobian(name):
    flow = randomise(FLOWS[name]())
    z = torch.randn(5, DIM, dtype=torch.float64)
    ctx = 2 * torch.randn(5, flow.context_features, dtype=torch.float64)  # large: planar far from identity
    _, log_det = flow(z, ctx)
    for i in range(len(z)):
        jac = jacobian(lambda v: flow(v[None], ctx[i : i + 1])[0][0], z[i])  # (DIM, DIM)
        assert torch.allclose(log_det[i], torch.linalg.slogdet(jac).logabsdet, atol=1e-8)


@pytest.mark.parametrize("name", ["iaf", "iaf_reversed"])
def test_iaf_jacobian_is_triangular(name):
    flow = randomise(FLOWS[name]())
    jac = jacobian(lambda v: flow(v[None], torch.zeros(1, 3, dtype=torch.float64))[0][0],
                   torch.randn(DIM, dtype=torch.float64))
    triangle = torch.triu(jac, 1) if name == "iaf" else torch.tril(jac, -1)  # dimension d sees only z_<d
    assert triangle.abs().max() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_planar_constraint_holds_for_any_raw_parameters(dtype):
    flow = PlanarFlow(DIM)
    ctx = 10 * torch.randn(1000, flow.context_features, dtype=dtype)
    ctx[:100, :DIM] = -50 * ctx[:100, DIM : 2 * DIM]  # u anti-parallel to w: raw w.u far below -1
    u_hat, w, _, wu_hat = flow.constrained(ctx)
    assert (wu_hat >= -1).all()  # what the log-det uses: exact in any precision
    if dtype == torch.float64:  # the vector u_hat itself, where rounding cannot hide a violation
        assert torch.allclose((w * u_hat).sum(-1, keepdim=True), wu_hat, atol=1e-8)
    _, log_det = flow(torch.randn(1000, DIM, dtype=dtype), ctx)
    assert torch.isfinite(log_det).all()


@pytest.mark.parametrize("name", FLOWS)
def test_zero_parameters_and_context_give_the_identity(name):
    flow = FLOWS[name]()
    with torch.no_grad():
        for p in flow.parameters():
            p.zero_()
    z = torch.randn(6, DIM)
    out, log_det = flow(z, torch.zeros(6, flow.context_features))
    assert torch.equal(out, z) and torch.equal(log_det, torch.zeros(6))


def test_iaf_starts_as_the_identity_whatever_the_context():
    flow = FLOWS["iaf"]()
    z = torch.randn(6, DIM)
    out, log_det = flow(z, torch.randn(6, 3))
    assert torch.equal(out, z) and torch.equal(log_det, torch.zeros(6))


def test_flow_bottleneck_kl_is_the_monte_carlo_estimate():
    base = GaussianBottleneck(DIM)
    bottleneck = FlowGaussianBottleneck(base, [randomise(PlanarFlow(DIM)).float() for _ in range(3)])
    h = torch.randn(8, bottleneck.in_features)
    torch.manual_seed(1)
    z, terms = bottleneck(h)
    torch.manual_seed(1)  # same draw of z0 by hand
    q0 = base.posterior(h[:, : 2 * DIM])
    z0 = q0.rsample()
    zk, log_det = z0, 0.0
    for k, flow in enumerate(bottleneck.flows):
        zk, step = flow(zk, h[:, 2 * DIM + k * (2 * DIM + 1) : 2 * DIM + (k + 1) * (2 * DIM + 1)])
        log_det = log_det + step
    expected = q0.log_prob(z0).sum(-1) - log_det - Normal(0.0, 1.0).log_prob(zk).sum(-1)
    assert torch.allclose(z, zk) and torch.allclose(terms["kl"], expected.mean(), atol=1e-5)
    assert torch.allclose(terms["log_det"], log_det.mean()) and set(bottleneck.weights) == {"kl"}


def test_identity_flows_give_an_unbiased_kl_estimate():
    bottleneck = FlowGaussianBottleneck(GaussianBottleneck(DIM), [IAFFlow(DIM, 8, 3) for _ in range(2)])
    h = torch.randn(1, bottleneck.in_features).repeat(20000, 1)
    closed_form = bottleneck.base(h[:, : 2 * DIM])[1]["kl"]
    assert torch.allclose(bottleneck(h)[1]["kl"], closed_form, rtol=0.05, atol=0.02)


@pytest.mark.parametrize("name", ["planar", "iaf"])
def test_sample_with_log_prob_is_the_change_of_variables(name):
    """k draws per input: each is a forward pass with log q_K = log q0 - log_det, the context shared by the draws."""
    flows = [randomise(FLOWS[name]()).float() for _ in range(2)]
    bottleneck = FlowGaussianBottleneck(GaussianBottleneck(DIM), flows)
    h = torch.randn(3, bottleneck.in_features)
    torch.manual_seed(5)
    z, log_q = bottleneck.sample_with_log_prob(h, num_samples=7)
    torch.manual_seed(5)
    z0, log_q0 = bottleneck.base.sample_with_log_prob(h[:, : 2 * DIM], num_samples=7)
    assert z.shape == (7, 3, DIM) and log_q.shape == (7, 3)
    for i in range(7):
        expected, log_det = bottleneck._flow(z0[i], bottleneck._split(h)[1])
        assert torch.allclose(z[i], expected, atol=1e-6) and torch.allclose(log_q[i], log_q0[i] - log_det, atol=1e-5)
    q0 = bottleneck.base.posterior(h[:, : 2 * DIM])
    assert torch.allclose(log_q0, q0.log_prob(z0).sum(-1))
