"""gin config text parsed without running anything: bindings as comparable values.

References (`@name`, `@name()`) and macros (`%name`) become symbols that compare by
what they name, so two configs can be compared binding by binding (the rebinding
warnings of config.py, the same-run check of runners/run_dir.py).
"""
from typing import Iterator, Sequence

import gin
from gin import config_parser


class _Reference:
  """`@name` or `@name()` in a parsed value, compared by the configurable it names."""

  def __init__(self, scoped_name: str, evaluate: bool):
    scope, _, name = scoped_name.rpartition("/")
    self.key = (scope, complete_selector(name), evaluate)
    self.text = "@" + scoped_name + ("()" if evaluate else "")

  def __eq__(self, other):
    return isinstance(other, _Reference) and self.key == other.key

  def __hash__(self):
    return hash(self.key)

  def __repr__(self):
    return self.text


class _Macro:
  """`%name` in a parsed value, compared by name."""

  def __init__(self, name: str):
    self.name = name

  def __eq__(self, other):
    return isinstance(other, _Macro) and self.name == other.name

  def __hash__(self):
    return hash(self.name)

  def __repr__(self):
    return "%" + self.name


class _SymbolicDelegate(config_parser.ParserDelegate):
  """Parses references and macros into comparable symbols, evaluating nothing."""

  def configurable_reference(self, scoped_configurable_name, evaluate):
    return _Reference(scoped_configurable_name, evaluate)

  def macro(self, macro_name):
    return _Macro(macro_name)


def complete_selector(selector: str) -> str:
  """The registered configurable's full selector, so `X` and `module.X` compare equal."""
  try:
    # pylint: disable-next=protected-access
    match = gin.config._REGISTRY.get_match(selector)
  except (AttributeError, ValueError, KeyError):
    match = None
  return match.selector if match is not None else selector




def statements(text: str) -> Iterator[object]:
  """The statements of a gin config text (bindings, imports, includes), unevaluated."""
  return iter(config_parser.ConfigParser(text, _SymbolicDelegate()))


def bindings(text: str) -> dict[str, object]:
  """{'[scope/]Configurable.param': value} of the text's bindings (the last one wins)."""
  out = {}
  for statement in statements(text):
    if isinstance(statement, config_parser.BindingStatement) and statement.arg_name:
      name = f"{statement.selector}.{statement.arg_name}"
      out[f"{statement.scope}/{name}" if statement.scope else name] = statement.value
  return out


def rebind(text: str, values: dict[str, str], drop: Sequence[str] = ()) -> str:
  """The gin text with the one-line bindings of `values` ('Configurable.param' -> value
  text) set to those values (appended where the text has none) and those in `drop`
  removed. Bindings are matched by name at the start of a line (`name = value`, as gin
  writes them); the indented lines gin continues a long value on go with their binding."""
  lines, seen, replaced = [], set(), False
  for line in text.splitlines():
    if replaced and line[:1].isspace() and line.strip():
      continue  # a continuation line of a binding dropped or replaced above
    replaced = False
    name, sep, _ = line.partition(" = ")
    name = name.strip()
    if sep and not line[:1].isspace() and name in drop:
      replaced = True
      continue
    if sep and not line[:1].isspace() and name in values:
      line = f"{name} = {values[name]}"
      seen.add(name)
      replaced = True
    lines.append(line)
  lines += [f"{name} = {value}" for name, value in values.items() if name not in seen]
  return "\n".join(lines) + "\n"
