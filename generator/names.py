"""Neuron names: ``ORG.PRODUCT.KIND-NAME-VERSION`` (e.g. ``xmpl.br.resources-books-v1``)."""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass

from generator.errors import UsageError

KINDS = ("resources", "services")
_SEGMENT = r"[a-z][a-z0-9]*"
_NAME_RE = re.compile(
    rf"^(?P<org>{_SEGMENT})\.(?P<product>{_SEGMENT})\."
    rf"(?P<kind>[a-z]+)-(?P<name>{_SEGMENT})-(?P<version>v[0-9]+(?:(?:alpha|beta)[0-9]*)?)$"
)
EXPECTED = (
    "expected ORG.PRODUCT.KIND-NAME-VERSION: lower-case letters and digits, KIND is "
    "'resources' or 'services', VERSION like v1 or v1beta1 (e.g. xmpl.br.resources-books-v1)"
)
IDENT_RE = re.compile(rf"^{_SEGMENT}$")


@dataclass(frozen=True)
class NeuronName:
    org: str
    product: str
    kind: str
    name: str
    version: str

    @property
    def full(self) -> str:
        return f"{self.org}.{self.product}.{self.kind}-{self.name}-{self.version}"

    @property
    def package(self) -> str:
        """The proto package, e.g. ``xmpl.br.resources.books.v1``."""
        return f"{self.org}.{self.product}.{self.kind}.{self.name}.{self.version}"

    @property
    def proto_dir(self) -> str:
        return self.package.replace(".", "/")

    @property
    def proto_path(self) -> str:
        """Path of the proto relative to the workspace's ``proto/`` folder."""
        return f"{self.proto_dir}/{self.name}.proto"

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


def parse(value: str) -> NeuronName:
    """Parse a neuron name; raise :class:`UsageError` saying the expected pattern."""
    m = _NAME_RE.match(value)
    if not m:
        raise UsageError(f"invalid name {value!r}: {EXPECTED}")
    if m["kind"] not in KINDS:
        raise UsageError(f"invalid name {value!r}: unknown kind {m['kind']!r}; {EXPECTED}")
    for part in ("org", "product", "name"):
        if keyword.iskeyword(m[part]):
            raise UsageError(
                f"invalid name {value!r}: {m[part]!r} is a Python keyword and cannot be a "
                f"package segment; {EXPECTED}"
            )
    return NeuronName(m["org"], m["product"], m["kind"], m["name"], m["version"])
