"""A run's gin config as a flat {"Configurable.param": value} dict, and labels from it.

The Runner saves the operative gin config next to the event files (`config.gin`) and as
TensorBoard text (`Config/gin`). Parsing uses gin's own parser, so multi-line values,
references (`@DQNAgent`, `@LpRegularizer()`) and macros (`%GAMMA`) are handled the way
gin handles them; references and macros become `Ref` values that compare and print as
they are written.
"""
import dataclasses
import re
from typing import Any, Optional

from gin import config_parser

# Bindings that name the run rather than set a hyperparameter. They become the
# `game`, `agent`, `seed` and `domain` columns, or are paths that differ between
# machines without changing the experiment.
GAME_KEY = "FixedReplayRunner.game"
DOMAIN_KEY = "FixedReplayRunner.domain"
SEED_KEY = "FixedReplayRunner.seed"
AGENT_KEY = "FixedReplayRunner.agent_fn"
NUM_ITERATIONS_KEY = "FixedReplayRunner.num_iterations"
NOT_HYPERPARAMETERS = (GAME_KEY, DOMAIN_KEY, SEED_KEY, AGENT_KEY,
                       "load_fixed_replay.replay_dir", "load_fixed_replay.data_root",
                       "quickstart_dataset.cache_dir", "load_fixed_replay.num_workers",
                       "FixedReplayRunner.keep_checkpoints", "FixedReplayRunner.fused_steps",
                       "FixedReplayRunner.scan_unroll")


@dataclasses.dataclass(frozen=True)
class Ref:
  """A gin reference (`@Name`, `@Name()`) or macro (`%NAME`) as written."""
  text: str

  @property
  def name(self) -> str:
    return self.text.lstrip("@%").removesuffix("()").rsplit("/", 1)[-1]

  def __str__(self) -> str:
    return self.text

  __repr__ = __str__


class _Delegate(config_parser.ParserDelegate):

  def configurable_reference(self, scoped_configurable_name, evaluate):
    return Ref(f"@{scoped_configurable_name}{'()' if evaluate else ''}")

  def macro(self, macro_name):
    return Ref(f"%{macro_name}")


def strip_text_summary(text: str) -> str:
  """The gin text inside the Runner's Markdown code fence (```...```), if any."""
  match = re.fullmatch(r"\s*```[a-z]*\n(.*?)\n?```\s*", text, flags=re.S)
  return match.group(1) if match else text


def parse(text: str) -> dict[str, Any]:
  """{"[scope/]Configurable.param": value} of every binding in gin text.

  Raises:
    ValueError: the text is not gin (the message says where gin's parser stopped).
  """
  out = {}
  try:
    for statement in config_parser.ConfigParser(strip_text_summary(text), _Delegate()):
      if isinstance(statement, config_parser.BindingStatement):
        scope = f"{statement.scope}/" if statement.scope else ""
        out[f"{scope}{statement.selector}.{statement.arg_name}"] = statement.value
  except SyntaxError as e:
    raise ValueError(f"not a gin config (line {e.lineno}: {e.msg})") from e
  return out


def hashable(value: Any) -> Any:
  """A value fit for a table column: scalars as they are, the rest as gin would print it."""
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  if isinstance(value, Ref):
    return str(value)
  if isinstance(value, (list, tuple)):
    inner = ", ".join(str(hashable(v)) if not isinstance(v, str) else repr(v) for v in value)
    if isinstance(value, tuple) and len(value) == 1:
      inner += ","
    return f"[{inner}]" if isinstance(value, list) else f"({inner})"
  if isinstance(value, dict):
    return "{" + ", ".join(f"{k!r}: {hashable(v)}" for k, v in value.items()) + "}"
  return str(value)


def agent_label(config: dict[str, Any]) -> Optional[str]:
  """"DQNAgent", or "DQNAgent+LpRegularizer" when the agent has regularizers.

  The agent is `FixedReplayRunner.agent_fn`; the operative config leaves that out when
  it is the default (DQNAgent), so failing it, the one configurable whose name ends in
  "Agent". None when neither names it.
  """
  agent = config.get(AGENT_KEY)
  if agent is not None:
    name = agent.name if isinstance(agent, Ref) else str(agent).lstrip("@")
  else:
    agents = {k.rsplit(".", 1)[0].rsplit("/", 1)[-1] for k in config}
    agents = sorted(a for a in agents if a.endswith("Agent"))
    if len(agents) != 1:
      return None
    name = agents[0]
  regularizers = config.get(f"{name}.regularizers") or ()
  if isinstance(regularizers, Ref):
    regularizers = (regularizers,)
  extra = [r.name if isinstance(r, Ref) else str(r) for r in regularizers]
  return "+".join([name] + extra)
