"""The study file: seeds x games x settings of train.py runs, described in one TOML file.

    name = "gridworld_lp"          # optional; the file's stem by default
    gin_files = ["gin_configs/gridworld/base.gin"]   # relative to the repo root, or absolute
    bindings = ["GridworldRunner.num_iterations = 20"]   # bound in every run

    [axes]                         # in file order; each varies one thing
    "GridworldRunner.gradient_steps" = [10, 200]      # a gin parameter and its values
    [axes.agent]                   # a named axis: labelled settings
    fqi = {}
    lp = { gin_files = ["gin_configs/regularizers/lp.gin"],
           bindings = ["LpRegularizer.coefficient = 0.001"] }

    [seeds]                        # optional
    binding = "GridworldRunner.seeds"   # or "FixedReplayRunner.seed", ...
    values = [[0], [1]]            # ints, or lists of ints (the gridworld trains a list)

    [names]                        # optional short names in run directory names
    "GridworldRunner.gradient_steps" = "T"

    [[exclude]]                    # optional, repeatable: combinations not run
    "GridworldRunner.gradient_steps" = 10
    agent = "lp"

Values become gin literals: a string is quoted (`'breakout'`) unless it starts with
`@` or `%` (a gin reference or macro, kept as written: "@MinAtarDQNNetwork"); ints,
floats and booleans are written as gin reads them (True/False); arrays become gin
lists and inline tables gin dicts.

Runs: the cartesian product of the axes (file order), then the seeds, minus every run
that matches all entries of an [[exclude]] table. A run's gin files are the study's,
then those of its named-axis labels in axis order; its bindings are the study's, then
one per axis (a parameter axis's `parameter = value`, a named axis's label bindings),
then the seed binding. train.py applies every file before every binding.

Run names (their directories under the study directory): one path component per axis
with more than one value, in file order, then `seed_<v>` (`seeds_0-1` for a list of
seeds). A named axis gives its label ("lp"), a string-valued axis the string
("breakout"), any other axis `<short><value>` with `short` the [names] entry or the
parameter's last segment and numbers written compactly ("T200", "learning_rate1e-4",
"coefficient0.01"). Characters outside `A-Za-z0-9._+=-` become `_`.

`load` checks everything before anything is written: the TOML, every axis and exclude,
that no parameter is bound from two places (two axes, an axis and the study's
bindings, the seed binding), that every gin file exists, and, by parsing each run's
whole gin config in this process as train.py would, every binding and value. Each
problem is one ConfigError paragraph naming the study file and the axis at fault.
"""
import dataclasses
import itertools
import logging
import math
import os
import re
from typing import Any, Optional, Sequence

try:
  import tomllib
except ImportError:  # Python 3.10
  import tomli as tomllib  # pylint: disable=import-error

from batch_rl.study import run as run_lib
from batch_rl.validation import ConfigError

_TOP_LEVEL = ("name", "gin_files", "bindings", "axes", "seeds", "names", "exclude")
_LABEL_KEYS = ("gin_files", "bindings")
_PARAMETER = re.compile(r"^(?:[A-Za-z_][\w.]*/)*[A-Za-z_][\w.]*\.[A-Za-z_]\w*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]+")
# Names of what train.py and the study keep inside a run directory.
_RESERVED = ("checkpoints", run_lib.LOG_DIR)


@dataclasses.dataclass(frozen=True)
class Value:
  """One value of an axis.

  label: what tables show and excludes name (a named axis's label, a string value
    as it is, other values as gin literals).
  component: its part of the run name.
  gin_files, bindings: what it adds to a run.
  raw: the TOML value (a named axis: its label).
  """
  label: str
  component: str
  gin_files: tuple[str, ...]
  bindings: tuple[str, ...]
  raw: Any


@dataclasses.dataclass(frozen=True)
class Axis:
  """A gin parameter and its values, or a named axis of labelled settings."""
  name: str
  values: tuple[Value, ...]
  named: bool = False

  @property
  def varies(self) -> bool:
    return len(self.values) > 1


@dataclasses.dataclass(frozen=True)
class Study:
  """A parsed study file. `seeds` is None when the file has no [seeds] table."""
  path: str
  name: str
  text: str
  gin_files: tuple[str, ...]
  bindings: tuple[str, ...]
  axes: tuple[Axis, ...]
  seeds: Optional[Axis]
  excludes: tuple[dict[str, Any], ...]

  def runs(self, study_dir: str) -> list[run_lib.Run]:
    """The study's runs, in expansion order, with directories under study_dir."""
    return [_make_run(self, combo, study_dir) for combo in self._combinations()]

  def varying_axes(self) -> list[Axis]:
    axes = [axis for axis in self.axes if axis.varies]
    if self.seeds is not None and self.seeds.varies:
      axes.append(self.seeds)
    return axes

  def _combinations(self) -> list[tuple[Value, ...]]:
    axes = list(self.axes) + ([self.seeds] if self.seeds is not None else [])
    out = []
    for combo in itertools.product(*(axis.values for axis in axes)):
      chosen = {axis.name: value for axis, value in zip(axes, combo)}
      if not any(all(_same(chosen[key].raw, want) for key, want in exclude.items())
                 for exclude in self.excludes):
        out.append(combo)
    return out


def _make_run(study: Study, combo: Sequence[Value], study_dir: str) -> run_lib.Run:
  axes = list(study.axes) + ([study.seeds] if study.seeds is not None else [])
  parts = [value.component for axis, value in zip(axes, combo)
           if axis.varies or axis is study.seeds]
  name = "/".join(parts) or "run"
  gin_files = study.gin_files + tuple(f for value in combo for f in value.gin_files)
  bindings = study.bindings + tuple(b for value in combo for b in value.bindings)
  labels = tuple((axis.name, value.label) for axis, value in zip(axes, combo)
                 if axis.varies)
  return run_lib.Run(name=name, run_dir=os.path.join(os.path.abspath(study_dir),
                                                     *name.split("/")),
                     gin_files=gin_files, bindings=bindings, axes=labels)


def _same(a: Any, b: Any) -> bool:
  """TOML values equal as values of one type (True is not 1, 1 is 1.0)."""
  if isinstance(a, bool) or isinstance(b, bool):
    return isinstance(a, bool) and isinstance(b, bool) and a == b
  if isinstance(a, (int, float)) and isinstance(b, (int, float)):
    return a == b
  return type(a) is type(b) and a == b


# ---------------------------------------------------------------------- values
def gin_literal(value: Any, where: str) -> str:
  """The gin text of a TOML value; ConfigError naming `where` for one gin cannot hold."""
  if isinstance(value, bool):
    return "True" if value else "False"
  if isinstance(value, int):
    return str(value)
  if isinstance(value, float):
    if not math.isfinite(value):
      raise ConfigError(f"{where}: {value!r} is not a number gin can read; use a "
                        "finite value.")
    return repr(value)
  if isinstance(value, str):
    return value if value.startswith(("@", "%")) else repr(value)
  if isinstance(value, list):
    return "[" + ", ".join(gin_literal(v, where) for v in value) + "]"
  if isinstance(value, dict):
    return "{" + ", ".join(f"{k!r}: {gin_literal(v, where)}" for k, v in value.items()) + "}"
  raise ConfigError(f"{where}: {value!r} ({type(value).__name__}) has no gin form; use "
                    "a string, number, boolean, array or inline table.")


def compact_number(x: Any) -> str:
  """'200', '0.01', '1e-4', '2.5e-4', '1e6': the shorter of positional and scientific
  notation (positional on a tie; integers below a million always positional)."""
  if isinstance(x, bool) or isinstance(x, int):
    return str(x)
  if x.is_integer() and abs(x) < 1e6:
    return str(int(x))
  positional = str(int(x)) if x.is_integer() else repr(x)
  for digits in range(17):
    scientific = f"{x:.{digits}e}"
    if float(scientific) == x:
      break
  mantissa, exponent = scientific.split("e")
  if "." in mantissa:
    mantissa = mantissa.rstrip("0").rstrip(".")
  scientific = f"{mantissa}e{int(exponent)}"
  return scientific if len(scientific) < len(positional) else positional


def safe_component(text: str) -> str:
  """`text` as one directory name: unsafe characters -> '_', no leading '.'."""
  out = _UNSAFE.sub("_", text.strip()).strip("_")
  if out.startswith("."):
    out = "_" + out
  return out


def _value_text(value: Any) -> str:
  if isinstance(value, str):
    return value.lstrip("@%").removesuffix("()")
  if isinstance(value, (bool, int, float)):
    return compact_number(value)
  if isinstance(value, list):
    return "-".join(_value_text(v) for v in value)
  return gin_literal(value, "")


def _component(short: str, value: Any) -> str:
  if isinstance(value, str):
    return safe_component(_value_text(value))
  return safe_component(short + _value_text(value))


# ---------------------------------------------------------------------- parsing
def _error(path: str, message: str) -> ConfigError:
  return ConfigError(f"Study file {path}: {message}")


def _string_list(path: str, value: Any, where: str) -> tuple[str, ...]:
  if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
    raise _error(path, f"{where} must be an array of strings, got {value!r}.")
  return tuple(value)


def _resolve(gin_file: str) -> str:
  return gin_file if os.path.isabs(gin_file) else os.path.join(run_lib.REPO_ROOT, gin_file)


def _check_gin_files(path: str, files: Sequence[str], where: str) -> None:
  for gin_file in files:
    if not os.path.isfile(_resolve(gin_file)):
      raise _error(path, f"{where} names the gin file {gin_file!r}, which does not exist "
                   f"(relative paths are read from the repository root "
                   f"{run_lib.REPO_ROOT}).")


def _parameter_axis(path: str, name: str, values: Any, short: str) -> Axis:
  where = f"axis {name!r}"
  if not _PARAMETER.match(name):
    raise _error(path, f"{where} is neither a gin parameter (`Configurable.parameter`) "
                 "with an array of values nor a table of labelled settings "
                 "(`[axes.<name>]`).")
  if not isinstance(values, list):
    raise _error(path, f"{where} must be an array of values, got {values!r}.")
  if not values:
    raise _error(path, f"{where} has no values; give at least one.")
  out = []
  for value in values:
    literal = gin_literal(value, f"Study file {path}: {where}")
    label = value if isinstance(value, str) else literal
    out.append(Value(label=label, component=_component(short, value), gin_files=(),
                     bindings=(f"{name} = {literal}",), raw=value))
  return Axis(name=name, values=tuple(out))


def _named_axis(path: str, name: str, labels: dict) -> Axis:
  where = f"axis {name!r}"
  if not labels:
    raise _error(path, f"{where} has no labels; give at least one "
                 f"(`[axes.{name}]` then `label = {{ gin_files = [...] }}`).")
  out = []
  for label, setting in labels.items():
    if not isinstance(setting, dict):
      raise _error(path, f"{where}: label {label!r} must be a table with `gin_files` "
                   f"and/or `bindings`, got {setting!r}.")
    unknown = sorted(set(setting) - set(_LABEL_KEYS))
    if unknown:
      raise _error(path, f"{where}: label {label!r} has unknown keys {unknown}; a label "
                   "takes `gin_files` and `bindings`.")
    files = _string_list(path, setting.get("gin_files", []),
                         f"{where}: label {label!r}: gin_files")
    bindings = _string_list(path, setting.get("bindings", []),
                            f"{where}: label {label!r}: bindings")
    _check_gin_files(path, files, f"{where}: label {label!r}")
    out.append(Value(label=label, component=safe_component(label), gin_files=files,
                     bindings=bindings, raw=label))
  return Axis(name=name, values=tuple(out), named=True)


def _seeds(path: str, table: Any) -> Axis:
  if not isinstance(table, dict) or set(table) != {"binding", "values"}:
    raise _error(path, "[seeds] must have exactly `binding` (the seed's gin parameter, "
                 "e.g. \"FixedReplayRunner.seed\") and `values` (an array of ints or of "
                 f"arrays of ints); got {table!r}.")
  binding, values = table["binding"], table["values"]
  if not isinstance(binding, str) or not _PARAMETER.match(binding):
    raise _error(path, f"[seeds] binding must be a gin parameter such as "
                 f"\"FixedReplayRunner.seed\", got {binding!r}.")

  def is_seed(v):
    return isinstance(v, int) and not isinstance(v, bool)

  if (not isinstance(values, list) or not values or
      not all(is_seed(v) or (isinstance(v, list) and v and all(map(is_seed, v)))
              for v in values)):
    raise _error(path, f"[seeds] values must be a non-empty array of ints or of "
                 f"non-empty arrays of ints, got {values!r}.")
  out = []
  for value in values:
    component = (f"seed_{value}" if is_seed(value)
                 else "seeds_" + "-".join(str(v) for v in value))
    literal = gin_literal(value, "")
    out.append(Value(label=literal, component=component, gin_files=(),
                     bindings=(f"{binding} = {literal}",), raw=value))
  return Axis(name=binding, values=tuple(out))


def _bound_parameter(path: str, binding: str, where: str) -> tuple[str, str]:
  """(key, name) of the parameter a binding string binds: name as written
  ('[scope/]Configurable.parameter'), key with registered configurables by their full
  name, so that `X.p` and `module.X.p` are the same parameter."""
  from gin import config_parser  # pylint: disable=g-import-not-at-top
  from batch_rl import gin_bindings  # pylint: disable=g-import-not-at-top
  try:
    statements = list(gin_bindings.statements(binding))
  except Exception as e:  # pylint: disable=broad-except  (gin's SyntaxError, TokenError)
    raise _error(path, f"{where}: {binding!r} is not a gin binding ({e}).") from None
  if (len(statements) != 1 or
      not isinstance(statements[0], config_parser.BindingStatement)):
    raise _error(path, f"{where}: {binding!r} must be one gin binding "
                 "(`Configurable.parameter = value`).")
  s = statements[0]
  scope = f"{s.scope}/" if s.scope else ""
  if not s.arg_name:  # a macro
    return scope + s.selector, scope + s.selector
  return (f"{scope}{gin_bindings.complete_selector(s.selector)}.{s.arg_name}",
          f"{scope}{s.selector}.{s.arg_name}")


def _check_single_binders(path: str, study: Study) -> None:
  """ConfigError when two places (axes, the study's bindings, the seeds) bind one
  parameter, or one place binds it twice. The labels of a named axis may bind the
  same parameters: that is what the axis varies."""

  def parameters(bindings: Sequence[str], where: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for binding in bindings:
      key, name = _bound_parameter(path, binding, where)
      if key in found:
        raise _error(path, f"{where} binds `{name}` twice; bind each parameter once.")
      found[key] = name
    return found

  groups = [("the study's `bindings`", parameters(study.bindings, "bindings"))]
  for axis in study.axes:
    bound: dict[str, str] = {}
    for value in axis.values:
      where = f"axis {axis.name!r}" + (f": label {value.label!r}" if axis.named else "")
      bound.update(parameters(value.bindings, where))
    groups.append((f"axis {axis.name!r}", bound))
  if study.seeds is not None:
    groups.append(("[seeds]", parameters(study.seeds.values[0].bindings, "[seeds]")))
  owner: dict[str, str] = {}
  for source, bound in groups:
    for key, name in sorted(bound.items()):
      if key in owner:
        raise _error(path, f"`{name}` is bound by {owner[key]} and by {source}; bind "
                     "each parameter in one place (an axis, the study's `bindings`, or "
                     "[seeds]).")
      owner[key] = source


def _excludes(path: str, tables: Any, axes: Sequence[Axis]) -> tuple[dict, ...]:
  if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
    raise _error(path, "exclude must be written as [[exclude]] tables of "
                 "`axis = value` entries.")
  by_name = {axis.name: axis for axis in axes}
  for i, table in enumerate(tables, 1):
    where = f"[[exclude]] number {i}"
    if not table:
      raise _error(path, f"{where} is empty; it would exclude every run.")
    for key, want in table.items():
      axis = by_name.get(key)
      if axis is None:
        raise _error(path, f"{where} names the axis {key!r}, which the study does not "
                     f"have; its axes are {sorted(by_name)}.")
      if not any(_same(value.raw, want) for value in axis.values):
        raise _error(path, f"{where}: axis {key!r} has no value {want!r}; its values "
                     f"are {[value.raw for value in axis.values]}.")
  return tuple(tables)


def parse(text: str, path: str) -> Study:
  """The study in `text` (read from `path`), checked except for gin itself."""
  if not path.endswith(".toml"):
    raise _error(path, "not a TOML file; a study file's name ends in .toml.")
  try:
    data = tomllib.loads(text)
  except tomllib.TOMLDecodeError as e:
    raise _error(path, f"not valid TOML: {e}.") from None
  unknown = sorted(set(data) - set(_TOP_LEVEL))
  if unknown:
    raise _error(path, f"unknown keys {unknown}; a study file has {list(_TOP_LEVEL)}.")
  name = data.get("name", os.path.splitext(os.path.basename(path))[0])
  if not isinstance(name, str) or not safe_component(name):
    raise _error(path, f"name must be a non-empty string, got {name!r}.")
  gin_files = _string_list(path, data.get("gin_files", []), "gin_files")
  bindings = _string_list(path, data.get("bindings", []), "bindings")
  _check_gin_files(path, gin_files, "gin_files")
  names = data.get("names", {})
  if not isinstance(names, dict) or not all(isinstance(v, str) for v in names.values()):
    raise _error(path, "[names] must map parameter axes to short names (strings).")
  axes_table = data.get("axes", {})
  if not isinstance(axes_table, dict):
    raise _error(path, "[axes] must be a table of axes.")
  for key in names:
    if not isinstance(axes_table.get(key), list):
      raise _error(path, f"[names] gives a short name to {key!r}, which is not a "
                   f"parameter axis; the parameter axes are "
                   f"{[k for k, v in axes_table.items() if isinstance(v, list)]}.")
  axes = []
  for key, value in axes_table.items():
    if isinstance(value, dict):
      axes.append(_named_axis(path, key, value))
    else:
      short = names.get(key, key.rsplit(".", 1)[-1])
      axes.append(_parameter_axis(path, key, value, short))
  seeds = _seeds(path, data["seeds"]) if "seeds" in data else None
  excludes = _excludes(path, data.get("exclude", []),
                       axes + ([seeds] if seeds is not None else []))
  study = Study(path=path, name=name, text=text, gin_files=gin_files, bindings=bindings,
                axes=tuple(axes), seeds=seeds, excludes=excludes)
  _check_single_binders(path, study)
  _check_names(path, study)
  return study


def _check_names(path: str, study: Study) -> None:
  combos = study._combinations()  # pylint: disable=protected-access
  if not combos:
    raise _error(path, "its [[exclude]] tables exclude every run.")
  axes = [a for a in study.axes if a.varies]
  for axis in axes + ([study.seeds] if study.seeds is not None else []):
    for value in axis.values:
      if not value.component or value.component in _RESERVED:
        raise _error(path, f"axis {axis.name!r}: value {value.label!r} gives the run "
                     f"directory name {value.component!r}, which cannot name a run "
                     "(empty, or a folder train.py or the study keeps in a run); rename "
                     "the label or give the axis a [names] entry.")
  seen: dict[str, str] = {}
  for run in study.runs("."):
    labels = ", ".join(f"{k} = {v}" for k, v in run.axes) or "(no varying axis)"
    if run.name in seen:
      raise _error(path, f"two runs would have the directory {run.name!r} ({seen[run.name]}"
                   f" and {labels}); give them values, labels or [names] that stay distinct as "
                   "directory names.")
    seen[run.name] = labels


# ---------------------------------------------------------------------- gin
class _OncePerMessage(logging.Filter):
  """Lets each log message through once (a rebinding warning per run would repeat)."""

  def __init__(self):
    super().__init__()
    self.seen: set[str] = set()

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    if message in self.seen:
      return False
    self.seen.add(message)
    return True


def _gin_message(error: BaseException) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  keep = lines[:1] + [line for line in lines[1:] if line.startswith("In file")]
  return " ".join(keep)


def _culprit(message: str, run: run_lib.Run) -> Optional[str]:
  """The gin file or binding of `run` that gin's message names first (the longest one
  where several start at the same place)."""
  found = []
  for item in run.gin_files + run.bindings:
    for text in {item, _resolve(item)} if item in run.gin_files else {item}:
      at = message.find(text)
      if at >= 0:
        found.append((at, -len(text), item))
  return min(found)[2] if found else None


def check_gin(study: Study) -> None:
  """Parses every run's whole gin config as train.py does; ConfigError naming the run,
  the axis (or the study's gin_files/bindings) and gin's message for the first that
  fails. Leaves gin's config cleared."""
  import gin  # pylint: disable=g-import-not-at-top
  from batch_rl import config as config_lib  # pylint: disable=g-import-not-at-top
  sources = {}
  for f in study.gin_files:
    sources.setdefault(f, "gin_files")
  for b in study.bindings:
    sources.setdefault(b, "bindings")
  for axis in study.axes + ((study.seeds,) if study.seeds is not None else ()):
    for value in axis.values:
      where = f"axis {axis.name!r}" + (f" (label {value.label!r})" if axis.named else "")
      for item in value.gin_files + value.bindings:
        sources.setdefault(item, where)
  once = _OncePerMessage()
  logger = logging.getLogger("batch_rl")
  logger.addFilter(once)
  try:
    for run in study.runs("."):
      try:
        config_lib.parse_gin([_resolve(f) for f in run.gin_files], run.bindings)
      except Exception as e:  # pylint: disable=broad-except  (gin raises many types)
        where = sources.get(_culprit(str(e), run), "its gin config")
        raise _error(study.path, f"run {run.name!r}: {where}: {_gin_message(e)}") from None
      finally:
        gin.clear_config()
  finally:
    logger.removeFilter(once)


def load(path: str, check: bool = True) -> Study:
  """Reads and checks the study file at `path` (with `check`, every run's gin too)."""
  if not os.path.isfile(path):
    raise ConfigError(f"Study file {path}: no such file.")
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise ConfigError(f"Study file {path}: cannot be read ({e}).") from None
  if check:
    # Registers every configurable, so that bindings compare by their full names.
    from batch_rl import config  # pylint: disable=g-import-not-at-top,unused-import
  study = parse(text, path)
  if check:
    check_gin(study)
  return study
