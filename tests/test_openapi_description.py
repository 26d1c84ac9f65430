"""app/openapi.yaml: served at /openapi.yaml, a valid OpenAPI document, and in
step with the routes and limits the app really has. test_fuzz_api.py holds
the answers to it."""
import os

import pytest
import yaml

from app import create_app, openai_request, validation
from app.config import Config
from app.engine import GenerationRequest
from engine_double import EngineDouble

DESCRIPTION = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "app", "openapi.yaml")


@pytest.fixture(scope="module")
def app():
    return create_app(Config(), engine=EngineDouble())


@pytest.fixture(scope="module")
def document():
    with open(DESCRIPTION, encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_the_description_is_served_as_yaml(app, document):
    response = app.test_client().get("/openapi.yaml")
    assert response.status_code == 200
    assert response.content_type.startswith("application/yaml")
    assert yaml.safe_load(response.get_data(as_text=True)) == document


def test_the_description_is_a_valid_openapi_document():
    import schemathesis

    schema = schemathesis.openapi.from_path(DESCRIPTION)
    schema.validate()  # raises on a document that breaks the OpenAPI 3.1 schema
    labels = {result.ok().label for result in schema.get_all_operations()}
    assert "GET /" in labels and "GET /stream" in labels


def test_every_route_is_described_and_every_described_path_exists(app, document):
    def openapi_path(rule):
        return rule.rule.replace("<path:filename>", "{file}")

    routes = {(openapi_path(rule), method.lower()) for rule in app.url_map.iter_rules()
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    described = {(path, method) for path, item in document["paths"].items() for method in item}
    assert routes == described


def test_the_described_limits_are_the_validators(document):
    parameters = document["components"]["parameters"]
    assert parameters["prefix"]["schema"]["maxLength"] == validation.MAX_PREFIX_CHARS
    assert parameters["length"]["schema"]["maximum"] == validation.MAX_LENGTH
    assert parameters["temperature"]["schema"]["maximum"] == validation.MAX_TEMPERATURE
    assert parameters["top_k"]["schema"]["maximum"] == validation.MAX_TOP_K
    assert parameters["seed"]["schema"]["maximum"] == validation.MAX_SEED
    for name, (low, high) in {"repetition_penalty": validation.REPETITION_PENALTY_RANGE,
                              "frequency_penalty": validation.PENALTY_RANGE,
                              "presence_penalty": validation.PENALTY_RANGE,
                              "no_repeat_ngram_size": (0, validation.MAX_NO_REPEAT_NGRAM),
                              "n": (1, validation.MAX_N)}.items():
        schema = parameters[name]["schema"]
        assert (schema["minimum"], schema["maximum"]) == (low, high), name
        query_default = validation.REPETITION_DEFAULTS.get(name, getattr(GenerationRequest(), name))
        assert schema["default"] == query_default, name
    generate = document["paths"]["/"]["get"]["parameters"]
    named = {p.get("name") or p["$ref"].rsplit("/", 1)[-1]: p for p in generate}
    assert set(named) == set(validation.GENERATION_PARAMETERS + validation.JSONP_PARAMETERS)
    assert named["callback"]["schema"]["pattern"] == \
        "^" + validation.CALLBACK_PATTERN.pattern + "$"
    stream = document["paths"]["/stream"]["get"]["parameters"]
    assert len(stream) == len(validation.GENERATION_PARAMETERS)


def test_the_described_bodies_are_the_parsers(document):
    schemas = document["components"]["schemas"]
    assert set(schemas["GenerationBody"]["properties"]) == set(validation.GENERATION_PARAMETERS)
    for path in ("/", "/stream"):
        body = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert body["schema"]["$ref"] == "#/components/schemas/GenerationBody"
    completion = schemas["CompletionRequest"]
    assert set(completion["properties"]) == set(openai_request.SUPPORTED +
                                                 openai_request.UNSUPPORTED)
    assert all(completion["properties"][name]["type"] == "null"  # null: not given
               for name in openai_request.UNSUPPORTED)
    for name, setting in openai_request.SAMPLING.items():
        assert completion["properties"][name]["anyOf"][0] == \
            {"$ref": f"#/components/parameters/{setting}/schema"}, name
    assert completion["properties"]["max_tokens"]["default"] == openai_request.DEFAULT_MAX_TOKENS
