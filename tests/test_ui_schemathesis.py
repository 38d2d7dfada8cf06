"""The API against its own ``ui/openapi.json`` with Schemathesis, on a live waitress server over
a filled store (plus the bash example's grid): generated requests, valid and invalid, never get a
5xx, and every response has a documented status, content type and body schema. The server has a
token and requests carry it as a bearer token, so state changes (stop, resume with any ``from``)
are exercised too. Examples are bounded per operation so the test stays short."""
import threading
from pathlib import Path

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance, status_code_conformance

from mlcomp.dag import submit
from mlcomp.db import open_store
from mlcomp.settings import Settings
from ui_fill import dispose, fill

ROOT = Path(__file__).resolve().parent.parent
MAX_EXAMPLES = 15
TOKEN = "schemathesis-token"


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    """A waitress server on 127.0.0.1 (a free port) over a filled store."""
    from waitress import create_server

    from ui import create_app

    root = tmp_path_factory.mktemp("api") / "mlcomp"
    settings = Settings(root=root, db_url=f"sqlite:///{root / 'mlcomp.db'}", token=TOKEN)
    with open_store(settings).begin() as session:
        fill(session, settings)
        submit(session, settings, ROOT / "dags" / "bash.yml")
    app = create_app(settings)
    server = create_server(app, host="127.0.0.1", port=0, threads=2)
    thread = threading.Thread(target=server.run, name="schemathesis-server", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}"
    server.close()
    thread.join(5)
    dispose(app)


schema = schemathesis.openapi.from_path(ROOT / "ui" / "openapi.json")


@schema.parametrize()
@hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_the_api_conforms_to_its_openapi_document(case, base_url):
    case.call_and_validate(base_url=base_url, headers={"Authorization": f"Bearer {TOKEN}"}, checks=[not_a_server_error, status_code_conformance,
                                                      content_type_conformance, response_schema_conformance])
