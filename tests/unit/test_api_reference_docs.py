"""docs/api-reference.md is what scripts/gen_api_docs.py prints from docs/openapi.json (itself
checked against the API by test_api.py): a changed route must come with the regenerated page."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GEN = str(REPO / "scripts" / "gen_api_docs.py")


def test_api_reference_in_tree_is_current() -> None:
    generate = runpy.run_path(GEN)["generate"]
    assert (REPO / "docs" / "api-reference.md").read_text() == generate(), (
        "docs/api-reference.md is stale: run `.venv/bin/python scripts/gen_api_docs.py > "
        "docs/api-reference.md` (after `.venv/bin/python -m jaula.daemon.api > docs/openapi.json`) "
        "and commit it")


def test_the_reference_names_every_route_parameter_and_body_field() -> None:
    doc = json.loads((REPO / "docs" / "openapi.json").read_text())
    text = (REPO / "docs" / "api-reference.md").read_text()
    schemas = doc["components"]["schemas"]
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            head = f"### `{method.upper()} {path}`\n"
            assert head in text, head
            section = text.split(head, 1)[1].split("\n### ", 1)[0]
            for p in op.get("parameters", []):
                assert f"| `{p['name']}` | {p['in']} |" in section, (method, path, p["name"])
            for content in op.get("requestBody", {}).get("content", {}).values():
                ref = content["schema"].get("$ref", "")
                for field in schemas.get(ref.rsplit("/", 1)[-1], {}).get("properties", {}):
                    assert f"| `{field}` |" in section, (method, path, field)
            for code in op["responses"]:
                assert f"`{code}`" in section, (method, path, code)


def test_a_changed_document_changes_the_page() -> None:
    """The page follows the document: a new route and a new body field show up (the generator
    reads what it is given, nothing hard-coded)."""
    generate = runpy.run_path(GEN)["generate"]
    doc = json.loads((REPO / "docs" / "openapi.json").read_text())
    doc["paths"]["/1.0/widgets"] = {"post": {
        "tags": ["widgets"], "summary": "Make a widget",
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/WidgetCreate"}}}},
        "responses": {"201": {"description": "made"}}}}
    doc["components"]["schemas"]["WidgetCreate"] = {
        "title": "WidgetCreate", "type": "object", "required": ["size"],
        "properties": {"size": {"type": "integer", "minimum": 1, "description": "how big"}}}
    page = generate(doc)
    assert page != generate()
    assert "## widgets routes" in page and "### `POST /1.0/widgets`" in page
    assert "| `size` | integer | yes | how big; >= 1 |" in page
