"""One exception type for problems the user can fix (bad spec, missing file, ...).

The CLI prints its message as a single line and exits with status 2; the Python API
simply raises it. Messages name the problem and what to do about it.

The naming rule: outside ``layercrit.cli`` a message never spells a command-line flag. A message
about an option raises :class:`ConfigError` with the option's Python parameter name as a
``{field}`` placeholder (``ConfigError("{samples} 0: must be ...", ("samples",))``); Python callers
read ``samples``, and the CLI alone renders it as its flag (``--samples``).
"""
import re

_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


def name_fields(template: str, names: dict[str, str], fields: tuple[str, ...] | None = None) -> str:
    """``template`` with each ``{field}`` placeholder (of ``fields``, default all) as ``names[field]``, else the
    field's own (Python) name."""
    wanted = set(_PLACEHOLDER.findall(template) if fields is None else fields)
    return _PLACEHOLDER.sub(lambda m: names.get(m.group(1), m.group(1)) if m.group(1) in wanted else m.group(0),
                            template)


class Message:
    """A log message that names options as ``{field}`` placeholders, like :class:`ConfigError`: ``str()``
    (what Python's logging shows) gives the Python names, the CLI's log handler its flags."""

    def __init__(self, template: str):
        self.template = template

    def naming(self, names: dict[str, str]) -> str:
        return name_fields(self.template, names)

    def __str__(self) -> str:
        return self.naming({})


class LayercritError(Exception):
    """A user-facing error: the message says what is wrong and how to fix it.

    Everything layercrit refuses (a bad setting, a missing file, a resume with other data) raises it or its
    subclass :class:`ConfigError` (also a ``ValueError``), whose ``fields`` name the parameters at fault.

    Examples:
        >>> import layercrit as lc
        >>> try:
        ...     lc.MeasureConfig(trials=0)
        ... except lc.LayercritError as e:
        ...     print(e.fields, isinstance(e, ValueError))
        ('trials',) True
    """


class NamedFields(Exception):
    """An error whose message names options as ``{field}`` placeholders (see the module's naming rule)."""

    def __init__(self, template: str, fields: tuple[str, ...] | None = None, python: dict[str, str] | None = None):
        self.template = template
        # default: every {name} placeholder of the template, in order
        self.fields = tuple(dict.fromkeys(_PLACEHOLDER.findall(template))) if fields is None else tuple(fields)
        self.python = python or {}  # how Python callers are told a field, where not by its bare name
        super().__init__(self.naming({}))

    @property
    def field(self) -> str:
        return self.fields[0]

    def naming(self, names: dict[str, str]) -> str:
        """The message with each field called by ``names[field]`` (default: its Python name)."""
        return name_fields(self.template, {**self.python, **names}, self.fields)


class ConfigError(NamedFields, LayercritError, ValueError):
    """A bad value of a named option (a :class:`layercrit.MeasureConfig` field, a Ray option, a parameter of
    ``create_model`` or ``measure``, ...); also a ``ValueError``, as Python callers expect of a bad argument.

    The message refers to the settings it is about as ``{field}`` placeholders: the Python API shows
    the Python field names (``batch_size``), the command line shows its flags instead
    (``--batch-size``, see :meth:`naming`).
    """


class BusyError(NamedFields, LayercritError):
    """Another process is working on the same thing right now (training a run folder, measuring a model
    into a database); a runner that has other work can leave it to that process and go on. Its message may
    name options as ``{field}`` placeholders, like :class:`ConfigError`'s."""
