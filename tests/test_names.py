import pytest

from generator import names
from generator.errors import UsageError


def test_parse_resources_name():
    n = names.parse("xmpl.br.resources-books-v1")
    assert (n.org, n.product, n.kind, n.name, n.version) == ("xmpl", "br", "resources", "books", "v1")
    assert n.package == "xmpl.br.resources.books.v1"
    assert n.proto_path == "xmpl/br/resources/books/v1/books.proto"
    assert n.neuron_dir == "resources-books-v1"
    assert n.full == "xmpl.br.resources-books-v1"


def test_parse_services_name_with_prerelease_version():
    n = names.parse("xmpl.br.services-translator-v2beta1")
    assert n.kind == "services" and n.version == "v2beta1"


@pytest.mark.parametrize(
    "bad, says",
    [
        ("xmpl.br.books", "ORG.PRODUCT.KIND-NAME-VERSION"),
        ("Xmpl.br.resources-books-v1", "lower-case"),
        ("../x", "ORG.PRODUCT.KIND-NAME-VERSION"),
        ("xmpl.br.resources-books-1", "VERSION like v1"),
        ("xmpl.br.widgets-books-v1", "unknown kind 'widgets'"),
        ("xmpl.br.resources-class-v1", "Python keyword"),
        ("xmpl.br.resources-books-v1/../../etc", "ORG.PRODUCT.KIND-NAME-VERSION"),
        ("", "ORG.PRODUCT.KIND-NAME-VERSION"),
    ],
)
def test_bad_names_say_the_pattern_with_an_example(bad, says):
    with pytest.raises(UsageError) as err:
        names.parse(bad)
    assert says in err.value.message
    assert "xmpl.br.resources-books-v1" in err.value.message


def test_repository_passes_ruff():
    """Our own code passes the linter CI would run (generated neurons have their own test)."""
    import subprocess
    import sys
    from pathlib import Path

    ruff = Path(sys.executable).parent / "ruff"
    repo = Path(__file__).resolve().parent.parent
    r = subprocess.run([str(ruff), "check", "--no-cache", "generator", "tests", "bench"], cwd=repo,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
