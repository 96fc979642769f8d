"""Neuron names: ``ORG.PRODUCT.KIND-NAME-VERSION`` (e.g. ``xmpl.br.resources-books-v1``).

NAME may be several words joined by hyphens (``book-shelves``); singular and plural forms come
from the ``inflect`` library (imported only when needed: it is slow to import).
"""

from __future__ import annotations

import functools
import keyword
import re
from dataclasses import dataclass

from generator.errors import UsageError

KINDS = ("resources", "services")
_SEGMENT = r"[a-z][a-z0-9]*"
_NAME_RE = re.compile(
    rf"^(?P<org>{_SEGMENT})\.(?P<product>{_SEGMENT})\."
    rf"(?P<kind>[a-z]+)-(?P<name>{_SEGMENT}(?:-{_SEGMENT})*)-(?P<version>v[0-9]+(?:(?:alpha|beta)[0-9]*)?)$"
)
EXAMPLE_ORG, EXAMPLE_PRODUCT = "xmpl", "br"
NAME_MAX = 63  # NAME becomes a folder, a file stem (+ "_pb2_grpc.pyi") and message names


def expected(org: str = EXAMPLE_ORG, product: str = EXAMPLE_PRODUCT) -> str:
    """What a name looks like, with an example in the workspace's own org and product."""
    return (
        "expected ORG.PRODUCT.KIND-NAME-VERSION: lower-case letters and digits, NAME may be words "
        "joined by hyphens, KIND is 'resources' or 'services', VERSION like v1 or v1beta1 "
        f"(e.g. {org}.{product}.resources-books-v1 or {org}.{product}.resources-book-shelves-v1)"
    )


EXPECTED = expected()


def example(org: str = EXAMPLE_ORG, product: str = EXAMPLE_PRODUCT) -> str:
    """A neuron name to show in messages: ``ORG.PRODUCT.resources-books-v1``."""
    return f"{org}.{product}.resources-books-v1"
IDENT_RE = re.compile(rf"^{_SEGMENT}$")


FOLDER_MAX = 49  # the Cloud Run service is named after the folder; "-http" etc. must still fit 63
_FOLDER_RE = re.compile(r"^[a-z](?:[a-z0-9-]*[a-z0-9])?$")
FOLDER_RULE = (f"lower-case letters, digits and hyphens, starting with a letter, not ending with a hyphen, "
               f"at most {FOLDER_MAX} characters (the Cloud Run service is named after it)")


def folder_problem(value: str) -> str | None:
    """Why ``value`` cannot name a neuron folder (and its Cloud Run service); None if it can."""
    if len(value) > FOLDER_MAX:
        return f"it is {len(value)} characters long"
    if not _FOLDER_RE.match(value) or "--" in value:
        return "it has characters other than lower-case letters, digits and single hyphens, or does not start with a letter"
    return None


def folder_from(text: str) -> str:
    """``text`` made into folder-name characters: ``Book_Shelves.v1`` -> ``book-shelves-v1``."""
    return "-".join(p for p in re.split(r"[^a-z0-9]+", text.lower()) if p)


@dataclass(frozen=True)
class NeuronName:
    org: str
    product: str
    kind: str
    name: str  # "books", "book-shelves"
    version: str

    @property
    def full(self) -> str:
        return f"{self.org}.{self.product}.{self.kind}-{self.name}-{self.version}"

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(self.name.split("-"))

    @property
    def snake(self) -> str:
        """NAME as a package segment and file stem: ``book_shelves``."""
        return "_".join(self.words)

    @property
    def package(self) -> str:
        """The proto package, e.g. ``xmpl.br.resources.book_shelves.v1``."""
        return f"{self.org}.{self.product}.{self.kind}.{self.snake}.{self.version}"

    @property
    def proto_dir(self) -> str:
        return self.package.replace(".", "/")

    @property
    def proto_path(self) -> str:
        """Path of the proto relative to the workspace's ``proto/`` folder."""
        return f"{self.proto_dir}/{self.snake}.proto"

    @property
    def neuron_dir(self) -> str:
        return f"{self.kind}-{self.name}-{self.version}"


def check_identifier(value: str, what: str) -> str:
    """An org or product id: lower-case letters and digits, starting with a letter."""
    if not IDENT_RE.match(value) or keyword.iskeyword(value):
        raise UsageError(
            f"invalid {what} {value!r}: use lower-case letters and digits, starting with a "
            "letter, and not a Python keyword (e.g. xmpl)"
        )
    return value


def parse(value: str, org: str = EXAMPLE_ORG, product: str = EXAMPLE_PRODUCT) -> NeuronName:
    """Parse a neuron name; raise :class:`UsageError` saying the expected pattern, with an
    example in ``org`` and ``product`` (the workspace's)."""
    want = expected(org, product)
    m = _NAME_RE.match(value)
    if not m:
        raise UsageError(f"invalid name {value!r}: {want}")
    if len(m["name"]) > NAME_MAX:
        shown = value if len(value) <= 80 else value[:80] + "…"
        raise UsageError(f"invalid name {shown!r}: NAME is {len(m['name'])} characters long, at most {NAME_MAX}; {want}")
    if m["kind"] not in KINDS:
        raise UsageError(f"invalid name {value!r}: unknown kind {m['kind']!r}; {want}")
    for part in (m["org"], m["product"], m["name"].replace("-", "_")):
        if keyword.iskeyword(part):
            raise UsageError(
                f"invalid name {value!r}: {part!r} is a Python keyword and cannot be a package segment; {want}"
            )
    return NeuronName(m["org"], m["product"], m["kind"], m["name"], m["version"])


def _import_inflect():
    """The ``inflect`` module, imported without typeguard's run-time checks on its methods:
    typeguard re-compiles every decorated method at import, 3 s of a 3.2 s import here (0.2 s
    without). We only pass it plain strings, so the checks would never fire. Unless typeguard
    is already loaded, inflect sees a stand-in module with a no-op ``typechecked`` (importing
    typeguard itself costs ~60 ms), removed again afterwards."""
    import sys
    import types

    if "inflect" in sys.modules:
        return sys.modules["inflect"]

    def typechecked(target=None, **_options):
        return target if target is not None else (lambda t: t)

    real = sys.modules.get("typeguard")
    if real is None:
        stand_in = types.ModuleType("typeguard")
        stand_in.typechecked = typechecked
        sys.modules["typeguard"] = stand_in
    else:
        real_typechecked, real.typechecked = real.typechecked, typechecked
    try:
        import inflect
    finally:
        if real is None:
            del sys.modules["typeguard"]
        else:
            real.typechecked = real_typechecked
    return inflect


@functools.cache
def _engine(classical: bool = True):
    """An inflect engine; ``classical`` singulars: indices -> index, media -> medium."""
    engine = _import_inflect().engine()
    if classical:
        engine.classical(all=True)
    return engine


_CAMEL_TAIL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


class _Answers:
    """inflect's answers kept per user (``~/.cache/scaffold/inflect``), so a run whose words were
    all seen before never imports inflect (~15-40 ms). The file is named by inflect's installed
    module (path, size, mtime): another inflect starts afresh. Unreadable or unwritable: no cache."""

    def __init__(self) -> None:
        self.path = None
        self.known: dict[str, str] = {}
        try:
            self._load()
        except OSError:
            self.path = None

    def _load(self) -> None:
        import hashlib
        import importlib.util
        import json
        import os

        from generator import usercache

        spec = importlib.util.find_spec("inflect")
        if spec is None or not spec.origin:
            return
        st = os.stat(spec.origin)
        name = hashlib.sha256(f"{spec.origin}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()
        self.path = usercache.directory("inflect") / f"{name}.json"
        raw = usercache.read(self.path)
        try:
            known = json.loads(raw) if raw else {}
        except ValueError:
            return  # damaged: rewritten with the next answer
        if isinstance(known, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in known.items()):
            self.known = known

    def get(self, question: str, compute) -> str:
        """The answer to ``question`` (e.g. ``"singular:shelves"``), from ``compute()`` the first time."""
        if question not in self.known:
            import json

            from generator import usercache

            self.known[question] = compute()
            if self.path is not None:
                usercache.store(self.path, json.dumps(self.known, sort_keys=True).encode())
        return self.known[question]


@functools.cache
def _answers() -> _Answers:
    return _Answers()


def singular(word: str) -> str:
    """The singular of an English noun, of the last word of ``book-shelves``, ``book_shelves``
    or ``bookShelves`` (``people`` -> ``person``); unchanged when already singular."""
    head, tail = _split_last(word)
    one = _answers().get(f"singular:{tail.lower()}", lambda: _engine().singular_noun(tail.lower()) or "")
    return head + _same_case(tail, one) if one else word


def plural(word: str) -> str:
    """The plural of a singular English noun (``person`` -> ``people``), last word inflected."""
    head, tail = _split_last(word)
    many = _answers().get(f"plural:{tail.lower()}", lambda: _engine(classical=False).plural_noun(tail.lower()))
    return head + _same_case(tail, many)


def _split_last(word: str) -> tuple[str, str]:
    cut = max(word.rfind("-"), word.rfind("_"))
    camel = [m.start() for m in _CAMEL_TAIL.finditer(word)]
    at = max(cut + 1, camel[-1] if camel else 0)
    return word[:at], word[at:]


def _same_case(model: str, word: str) -> str:
    return word[:1].upper() + word[1:] if model[:1].isupper() else word


@dataclass(frozen=True)
class Nouns:
    """The forms of a resource NAME a proto uses, e.g. for ``book-shelves``."""

    singular_words: str  # "book shelf" (prose)
    plural_words: str  # "book shelves"
    singular: str  # "book_shelf": field names and pattern variables
    plural_field: str  # "book_shelves": the list response field
    collection: str  # "bookShelves": collection id and resource plural (lowerCamel)
    singular_camel: str  # "bookShelf": resource singular
    type_name: str  # "BookShelf"
    plural_type: str  # "BookShelves"


def nouns(name: str) -> Nouns:
    """Singular and plural forms of a hyphenated resource NAME (taken as the plural); an
    uncountable NAME (``news``, ``series``) is both."""
    one = singular(name)
    many = name if one != name else plural(name)  # NAME was singular ("person"): make its plural
    words_one, words_many = one.split("-"), many.split("-")

    def camel(words: list[str], upper: bool) -> str:
        text = "".join(w[:1].upper() + w[1:] for w in words)
        return text if upper else text[:1].lower() + text[1:]

    return Nouns(
        singular_words=" ".join(words_one),
        plural_words=" ".join(words_many),
        singular="_".join(words_one),
        plural_field="_".join(words_many),
        collection=camel(words_many, False),
        singular_camel=camel(words_one, False),
        type_name=camel(words_one, True),
        plural_type=camel(words_many, True),
    )


def default_folder(proto: str) -> str:
    """The default neuron folder for a proto (virtual path): its last three folders, plus its
    stem unless the stem repeats the folder before the version. ``a/b/v1/x.proto`` ->
    ``a-b-v1-x``, ``google/example/library/v1/library.proto`` -> ``example-library-v1``,
    ``x.proto`` -> ``x``."""
    from pathlib import PurePosixPath

    path = PurePosixPath(proto)
    parts = [p for p in path.parent.as_posix().split("/") if p not in ("", ".")][-3:]
    stem_repeated = len(parts) >= 2 and parts[-2] == path.stem
    return folder_from("-".join(parts + ([] if stem_repeated else [path.stem])))
