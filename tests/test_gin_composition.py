"""Gin files compose: domain/agent file, then regulariser and intervention files.

Every file in gin_configs/regularizers and gin_configs/interventions stacks on the
quickstart (MinAtar) without changing its domain, network, schedule or data, and turns
its term on; the old per-agent Atari files (gin_configs/offline/dqn_lp.gin, ...) mean
what they meant; and `parse_gin` logs a WARNING when a later --gin_files entry rebinds
what an earlier one set.
"""
import glob
import logging
import os

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from batch_rl import config as config_lib
from batch_rl import networks
from batch_rl.agents import dqn
from batch_rl.agents import qr_dqn
from batch_rl.agents import regularizer_terms as terms
from batch_rl.runners import registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = "gin_configs/quickstart.gin"
STACKING_FILES = sorted(
    os.path.relpath(p, REPO).replace(os.sep, "/")
    for p in glob.glob(os.path.join(REPO, "gin_configs", "regularizers", "*.gin"))
    + glob.glob(os.path.join(REPO, "gin_configs", "interventions", "*.gin")))
LP, DR3 = "gin_configs/regularizers/lp.gin", "gin_configs/regularizers/dr3.gin"


@pytest.fixture(autouse=True)
def clear_gin():
  yield
  gin.clear_config()


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
  monkeypatch.chdir(REPO)  # --gin_files paths as a user types them, from the root.


def rebinding_warnings(caplog):
  return [r.getMessage() for r in caplog.records
          if r.name == "batch_rl" and r.levelno == logging.WARNING and " rebinds " in r.message]


def build(files, tmp_path, bindings=()):
  config_lib.parse_gin(files, list(bindings))
  return registry.create_runner(base_dir=str(tmp_path / "run"))


def describe(runner):
  """What must not change when a regulariser or intervention file is stacked."""
  return dict(env=runner.env_name, network=type(runner.agent.network),
              training_steps=runner.training_steps, num_iterations=runner.num_iterations,
              replay_dir=runner.replay.replay_dir, state_shape=runner.replay.state_shape,
              num_transitions=runner.replay.num_transitions,
              num_actions=runner.agent.num_actions,
              target_update_period=runner.agent.target_update_period)


@pytest.fixture(scope="module")
def quickstart_alone(tmp_path_factory):
  """describe() of the quickstart without any stacked file (its dataset is cached)."""
  os.chdir(REPO)
  try:
    return describe(build([QUICKSTART], tmp_path_factory.mktemp("quickstart")))
  finally:
    gin.clear_config()


def term_types(runner):
  return [type(r) for r in runner.agent.regularizers]


def check_lp(runner):
  assert term_types(runner) == [terms.LpRegularizer]


def check_dr3(runner):
  assert term_types(runner) == [terms.DR3Regularizer]


def check_cql(runner):
  assert term_types(runner) == [terms.CQLRegularizer]
  assert runner.agent.regularizers[0].coefficient == 1.0


def check_curl(runner):
  assert term_types(runner) == [terms.CURLRegularizer]
  assert runner.agent.regularizers[0].pad is None  # derived from the 10x10 frames: 1
  assert runner.agent.network.contrastive_projection


def check_vib(runner):
  assert term_types(runner) == [terms.VIBRegularizer]
  assert runner.agent.network.bottleneck == "vib"


def check_dropout(runner):
  assert term_types(runner) == []
  assert runner.agent.network.dropout_rate == 0.1


def check_sam(runner):
  assert term_types(runner) == []
  assert gin.query_parameter("create_optimizer.sam_rho") == 0.05


def check_tanh(runner):
  assert term_types(runner) == []
  assert runner.agent.network.activation == "tanh"


CHECKS = {
    "gin_configs/regularizers/lp.gin": check_lp,
    "gin_configs/regularizers/dr3.gin": check_dr3,
    "gin_configs/regularizers/cql.gin": check_cql,
    "gin_configs/interventions/curl.gin": check_curl,
    "gin_configs/interventions/vib.gin": check_vib,
    "gin_configs/interventions/dropout.gin": check_dropout,
    "gin_configs/interventions/sam.gin": check_sam,
    "gin_configs/interventions/tanh.gin": check_tanh,
}


def test_every_stacking_file_is_checked():
  assert set(STACKING_FILES) == set(CHECKS), "add new regulariser/intervention files to CHECKS"


@pytest.mark.parametrize("path", STACKING_FILES)
def test_stacking_file_keeps_the_quickstart_and_turns_its_term_on(
    path, tmp_path, quickstart_alone, caplog):
  caplog.set_level(logging.WARNING, logger="batch_rl")
  runner = build([QUICKSTART, path], tmp_path)
  assert describe(runner) == quickstart_alone
  assert runner.env_name == "minatar:breakout"
  assert isinstance(runner.agent.network, networks.MinAtarDQNNetwork)
  CHECKS[path](runner)
  assert rebinding_warnings(caplog) == []  # it binds only its own parameters


@pytest.mark.parametrize("path,param,value", [
    ("gin_configs/interventions/tanh.gin", "activation", "tanh"),
    ("gin_configs/interventions/dropout.gin", "dropout_rate", 0.1)])
def test_interventions_bind_every_network_that_has_the_parameter(path, param, value):
  config_lib.parse_gin([path], [])
  with_param = [cls for cls in vars(networks).values()
                if isinstance(cls, type) and issubclass(cls, nn.Module)
                and param in getattr(cls, "__dataclass_fields__", {})]
  assert networks.NatureDQNNetwork in with_param and networks.MinAtarDQNNetwork in with_param
  for cls in with_param:
    assert gin.query_parameter(f"{cls.__name__}.{param}") == value, cls.__name__
    assert getattr(cls(num_actions=2), param) == value, cls.__name__


def test_two_regularizer_files_stack_in_name_order(tmp_path):
  for files in ([QUICKSTART, LP, DR3], [QUICKSTART, DR3, LP]):
    config_lib.parse_gin(files, [])
    assert [type(t) for t in terms.regularization()] == [terms.DR3Regularizer,
                                                         terms.LpRegularizer]
  runner = build(files, tmp_path)
  assert term_types(runner) == [terms.DR3Regularizer, terms.LpRegularizer]
  assert runner.agent._needs_next_online  # pylint: disable=protected-access (DR3's phi(s'))


# --- the old per-agent Atari files --------------------------------------------------

# What each file bound before it was split into domain/agent + term files: the agent,
# its one regulariser (class and constructor arguments), and network attributes.
OLD_FILES = {
    "dqn_lp.gin": (dqn.DQNAgent, terms.LpRegularizer(coefficient=0.001), {}),
    "dqn_dr3.gin": (dqn.DQNAgent, terms.DR3Regularizer(variant="paper", coefficient=0.1), {}),
    "cql_dqn.gin": (dqn.DQNAgent, terms.CQLRegularizer(coefficient=1.0, temperature=1.0),
                    {}),
    "cql_qr_dqn.gin": (qr_dqn.QRDQNAgent,
                       terms.CQLRegularizer(coefficient=1.0, temperature=1.0), {}),
    # The old file bound pad = 4; unbound, the term derives 4 from 84x84 frames.
    "dqn_curl.gin": (dqn.DQNAgent, terms.CURLRegularizer(weight=0.001, key_encoder="online"),
                     {"contrastive_projection": True}),
    "dqn_vib.gin": (dqn.DQNAgent, terms.VIBRegularizer(beta=0.001), {"bottleneck": "vib"}),
    "dqn_dropout.gin": (dqn.DQNAgent, None, {"dropout_rate": 0.1}),
    "dqn_sam.gin": (dqn.DQNAgent, None, {}),
    "dqn_tanh.gin": (dqn.DQNAgent, None, {"activation": "tanh"}),
}


@pytest.mark.parametrize("name", sorted(OLD_FILES))
def test_old_per_agent_file_means_what_it_meant(name, caplog):
  caplog.set_level(logging.WARNING, logger="batch_rl")
  agent_cls, term, network_attributes = OLD_FILES[name]
  config_lib.parse_gin([f"gin_configs/offline/{name}"], [])
  assert gin.query_parameter("FixedReplayRunner.game") == "Pong"
  assert gin.query_parameter("FixedReplayRunner.domain") == "atari"
  assert gin.query_parameter("FixedReplayRunner.training_steps") == 62_500
  assert gin.query_parameter("FixedReplayRunner.agent_fn").selector.endswith(
      agent_cls.__name__)
  agent = agent_cls(num_actions=6)  # as the runner builds it (no parameters yet)
  assert isinstance(agent.network, networks.NatureDQNNetwork)
  # Exactly one term with the old arguments: the loss and its PRNG splits are unchanged.
  if term is None:
    assert agent.regularizers == ()
  else:
    assert [type(t) for t in agent.regularizers] == [type(term)]
    assert vars(agent.regularizers[0]) == vars(term)
  defaults = {"activation": "relu", "dropout_rate": 0.0, "bottleneck": "none",
              "contrastive_projection": False}
  for attribute, default in defaults.items():
    assert getattr(agent.network, attribute) == network_attributes.get(attribute, default)
  sam_rho = 0.05 if name == "dqn_sam.gin" else None
  try:
    assert gin.query_parameter("create_optimizer.sam_rho") == sam_rho
  except ValueError:  # unbound: the default, no SAM
    assert sam_rho is None
  assert rebinding_warnings(caplog) == []  # includes within one entry never warn


# --- CURL's shift follows the frame size ---------------------------------------------

def test_curl_default_pad_is_four_pixels_on_atari_and_one_on_minatar():
  assert terms.CURLRegularizer.default_pad(84) == 4
  assert terms.CURLRegularizer.default_pad(10) == 1
  assert terms.CURLRegularizer.default_pad(1) == 1
  assert terms.CURLRegularizer.default_pad(168) == 8


@pytest.mark.parametrize("state_shape", [(84, 84, 4), (10, 10, 4, 1)])
def test_curl_without_pad_shifts_by_the_derived_pad(state_shape):
  states = jnp.asarray(np.random.default_rng(0).integers(0, 255, (6,) + state_shape),
                       jnp.uint8)

  def forward(s, key=None):
    del key
    flat = s.reshape(s.shape[0], -1).astype(jnp.float32) / 255.0
    return networks.QNetworkOutput(q_values=flat[:, :2], representation=flat,
                                   contrastive_query=flat)

  inputs = terms.LossInputs(q_values=None, phi=None, phi_next=None, action=None,
                            next_action=None, terminal=None, state=states, forward=forward)
  key = jax.random.PRNGKey(3)
  derived = terms.CURLRegularizer(weight=1.0)(inputs, key)[0]
  pad = terms.CURLRegularizer.default_pad(state_shape[0])
  explicit = terms.CURLRegularizer(weight=1.0, pad=pad)(inputs, key)[0]
  unshifted = terms.CURLRegularizer(weight=1.0, pad=0)(inputs, key)[0]
  assert float(derived) == float(explicit)
  assert float(derived) != float(unshifted)


# --- rebinding warnings --------------------------------------------------------------

def test_quickstart_then_an_atari_agent_file_warns_about_the_game(caplog):
  caplog.set_level(logging.WARNING, logger="batch_rl")
  config_lib.parse_gin([QUICKSTART, "gin_configs/offline/dqn_lp.gin"], [])
  warnings = rebinding_warnings(caplog)
  game = [w for w in warnings if "FixedReplayRunner.game" in w]
  assert len(game) == 1, warnings
  assert "gin_configs/offline/dqn_lp.gin" in game[0]
  assert "gin_configs/offline/dqn.gin" in game[0]  # the include that holds the line
  assert QUICKSTART in game[0]
  assert "'Pong'" in game[0] and "'breakout'" in game[0]
  assert any("DQNAgent.network = @NatureDQNNetwork" in w and "@MinAtarDQNNetwork" in w
             for w in warnings), warnings
  # Parameters the quickstart did not bind, or bound to the same value, do not warn.
  assert not any("DQNAgent.gamma" in w or "AtariEnvironment" in w for w in warnings)


def test_stacking_a_regularizer_file_warns_about_nothing(caplog):
  caplog.set_level(logging.WARNING, logger="batch_rl")
  config_lib.parse_gin([QUICKSTART, LP], [])
  assert rebinding_warnings(caplog) == []


def test_flags_and_one_files_own_includes_do_not_warn(caplog):
  caplog.set_level(logging.WARNING, logger="batch_rl")
  # qr_dqn.gin rebinds dqn.gin's agent_fn through its include: one entry, no warning.
  config_lib.parse_gin(["gin_configs/offline/qr_dqn.gin"],
                       ["FixedReplayRunner.game = 'Breakout'"])
  assert gin.query_parameter("FixedReplayRunner.game") == "Breakout"
  assert rebinding_warnings(caplog) == []


def test_rebinding_compares_values_not_spelling(tmp_path, caplog):
  caplog.set_level(logging.WARNING, logger="batch_rl")
  first = tmp_path / "first.gin"
  first.write_text("DQNAgent.gamma = 0.99\n"
                   "create_optimizer.learning_rate = 1e-4\n"
                   "DQNAgent.network = @MinAtarDQNNetwork\n"
                   "DQNAgent.regularizers = []\n")
  second = tmp_path / "second.gin"
  second.write_text("batch_rl.agents.dqn.DQNAgent.gamma = 0.99  # same, module-qualified\n"
                    "create_optimizer.learning_rate = 0.0001   # same number\n"
                    "DQNAgent.network = @batch_rl.networks.MinAtarDQNNetwork\n"
                    "DQNAgent.regularizers = [\n"
                    "    @LpRegularizer(),\n"
                    "]\n")
  config_lib.parse_gin([str(first), str(second)], [])
  warnings = rebinding_warnings(caplog)
  assert len(warnings) == 1, warnings
  assert "DQNAgent.regularizers = [@LpRegularizer()]" in warnings[0]
  assert str(second) in warnings[0] and str(first) in warnings[0] and "set []" in warnings[0]


def test_parse_errors_keep_their_messages(tmp_path):
  bad = tmp_path / "bad.gin"
  bad.write_text("DQNAgent.no_such_parameter = 1\n")
  with pytest.raises(config_lib.ConfigError, match=r"--gin_files=.*bad\.gin"):
    config_lib.parse_gin([QUICKSTART, str(bad)], [])
  with pytest.raises(config_lib.ConfigError, match="no such file"):
    config_lib.parse_gin([QUICKSTART, str(tmp_path / "missing.gin")], [])
