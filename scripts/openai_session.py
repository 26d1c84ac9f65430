#!/usr/bin/env python3
"""A session with OpenAI's official Python client against pokegen's /v1 API:
the model list, a completion, a stream, n completions, a stop string and a
refused parameter, printed as a transcript.

Usage: python scripts/openai_session.py [--base-url http://localhost:5000/v1]
(needs `pip install openai`, pinned in requirements-dev.txt)
"""
from __future__ import annotations

import argparse
import sys

import openai

PROMPT = "Pikachu and Ash were"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://localhost:5000/v1")
    args = parser.parse_args(argv)
    # The key is not checked; the client only insists on having one.
    client = openai.OpenAI(base_url=args.base_url, api_key="unused", max_retries=0)
    try:
        run(client)
    except openai.APIConnectionError as e:
        print(f"error: cannot reach {args.base_url}: {e}", file=sys.stderr)
        return 1
    return 0


def run(client: openai.OpenAI) -> None:
    section("models")
    model = client.models.list().data[0].id
    show("client.models.list().data[0].id", model)

    section("completion")
    completion = client.completions.create(model=model, prompt=PROMPT, max_tokens=24, seed=7)
    show("choices[0].text", completion.choices[0].text)
    show("choices[0].finish_reason", completion.choices[0].finish_reason)
    show("usage", completion.usage.model_dump())

    section("stream")
    pieces = []
    for chunk in client.completions.create(model=model, prompt=PROMPT, max_tokens=24, seed=7,
                                           stream=True, stream_options={"include_usage": True}):
        if chunk.choices:
            pieces.append(chunk.choices[0].text)
        else:
            show("last chunk's usage", chunk.usage.model_dump())
    show("pieces", pieces)
    show("joined == the completion above", "".join(pieces) == completion.choices[0].text)

    section("n=2")
    two = client.completions.create(model=model, prompt=PROMPT, max_tokens=12, n=2, seed=7)
    for choice in two.choices:
        show(f"choices[{choice.index}].text", choice.text)
    show("usage", two.usage.model_dump())

    section("stop")
    cut = client.completions.create(model=model, prompt=PROMPT, max_tokens=24, seed=7,
                                    stop=[".", "\n"])
    show("text with stop=['.', '\\n']", cut.choices[0].text)
    show("finish_reason", cut.choices[0].finish_reason)

    section("refused")
    try:
        client.completions.create(model=model, prompt=PROMPT, logprobs=2)
    except openai.BadRequestError as e:
        show("logprobs=2", f"{type(e).__name__} {e.status_code}: {e.body}")
    try:
        client.completions.create(model="gpt-3.5-turbo-instruct", prompt=PROMPT)
    except openai.NotFoundError as e:
        show("model='gpt-3.5-turbo-instruct'", f"{type(e).__name__} {e.status_code}: {e.body}")


def section(name: str) -> None:
    print(f"\n## {name}")


def show(label: str, value) -> None:
    print(f"{label}: {value!r}")


if __name__ == "__main__":
    sys.exit(main())
