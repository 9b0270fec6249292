"""YAML loading that remembers where every value came from (file and line).

Scenario errors must name file, line and field; plain yaml.safe_load forgets
positions, so mappings load as `SourcedDict`, which keeps the line of each key.
"""

import yaml


class SourcedDict(dict):
    """A dict that also records the source file and line of each key."""

    def __init__(self, *args, file="?", line=0, **kwargs):
        super().__init__(*args, **kwargs)
        self.file = file
        self.line = line
        self.key_lines = {}

    def where(self, key=None):
        """'file:line' of a key (or of the mapping itself)."""
        return f"{self.file}:{self.key_lines.get(key, self.line)}"


def _loader_for(file):
    class Loader(yaml.SafeLoader):
        pass

    def construct_mapping(loader, node):
        loader.flatten_mapping(node)
        out = SourcedDict(file=file, line=node.start_mark.line + 1)
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"unsupported mapping key {key!r}", key_node.start_mark)
            if key in out:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            out[key] = loader.construct_object(value_node, deep=True)
            out.key_lines[key] = key_node.start_mark.line + 1
        return out

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return Loader


class YamlSyntaxError(Exception):
    def __init__(self, file, line, message):
        self.file, self.line = file, line
        super().__init__(f"{file}:{line}: {message}")


def load_text(text, file="<string>"):
    try:
        return yaml.load(text, Loader=_loader_for(file))  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise YamlSyntaxError(file, line, f"YAML syntax: {exc.problem or exc}") from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, other controls)
        line = text.count("\n", 0, exc.position) + 1
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        raise YamlSyntaxError(file, line, f"character {char!r} is not allowed in YAML "
                                          "(control characters other than tab and newline)") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(file, 1, f"YAML syntax: {exc}") from None
    except RecursionError:
        raise YamlSyntaxError(file, 1, "nested too deeply (a scenario file needs a few levels)") from None


def deep_merge(base, override):
    """Merge two mappings; keys of `override` win and keep their own source lines."""
    if not isinstance(base, SourcedDict) or not isinstance(override, SourcedDict):
        return override
    out = SourcedDict(file=override.file, line=override.line)
    for key in base:
        out[key] = base[key]
        out.key_lines[key] = base.key_lines.get(key, base.line)
    for key, value in override.items():
        out[key] = deep_merge(base[key], value) if key in base else value
        out.key_lines[key] = override.key_lines.get(key, override.line)
    return out
