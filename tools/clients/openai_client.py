"""The openai Python package (pinned in requirements.lock) against a running `herd serve`.

Runs a chat, the same chat streamed, a tool-call round trip (a named tool choice, the call
answered with a `tool` message) and a completion with `echo` and `logprobs`, checks the shapes
the package parses, and prints what came back as one JSON object for the Rust test
(crates/herd-serve/tests/clients.rs) to compare with herd's own library calls.

    python tools/clients/openai_client.py --base-url http://127.0.0.1:8080/v1
"""

import argparse
import json

import openai

QUESTION = "What is the capital of France?"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}

# Phrasings of one question, for the forced tool call.
QUESTIONS = [
    "Check the weather in Paris.",
    "What is the current weather in Paris?",
    "What is the weather in Paris?",
    "How is the weather in Paris?",
    "Tell me the weather in Paris.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", default="none")
    args = parser.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0)
    out = {}

    messages = [{"role": "user", "content": QUESTION}]
    chat = client.chat.completions.create(
        model="herd", messages=messages, max_tokens=24, temperature=0
    )
    assert chat.object == "chat.completion"
    assert chat.choices[0].message.role == "assistant"
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens
    out["chat"] = chat.choices[0].message.content
    out["chat_usage"] = chat.usage.completion_tokens

    pieces = []
    usage = None
    for chunk in client.chat.completions.create(
        model="herd",
        messages=messages,
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    ):
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
    out["stream"] = "".join(pieces)
    out["stream_usage"] = usage.completion_tokens

    # A 135M model often fills the arguments with prose that never closes; the round trip is
    # what is tested, so the first phrasing whose forced call closes is taken.
    replies = []
    for question in QUESTIONS:
        ask = [{"role": "user", "content": question}]
        called = client.chat.completions.create(
            model="herd",
            messages=ask,
            tools=[WEATHER_TOOL],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=60,
            temperature=0,
        )
        choice = called.choices[0]
        replies.append(choice)
        if choice.finish_reason == "tool_calls":
            break
    assert choice.finish_reason == "tool_calls", replies
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id
    out["tool_call"] = {"name": call.function.name, "arguments": json.loads(call.function.arguments)}
    answered = client.chat.completions.create(
        model="herd",
        messages=ask
        + [
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 18}'},
        ],
        tools=[WEATHER_TOOL],
        max_tokens=24,
        temperature=0,
    )
    out["after_tool"] = answered.choices[0].message.content
    out["after_tool_finish"] = answered.choices[0].finish_reason

    completion = client.completions.create(
        model="herd",
        prompt="The capital of France is",
        max_tokens=4,
        temperature=0,
        echo=True,
        logprobs=2,
    )
    logprobs = completion.choices[0].logprobs
    assert logprobs.token_logprobs[0] is None
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.text_offset)
    out["completion"] = {
        "text": completion.choices[0].text,
        "tokens": len(logprobs.tokens),
        "token_logprobs": logprobs.token_logprobs,
        "top_sizes": [len(t) if t else 0 for t in logprobs.top_logprobs],
        "completion_tokens": completion.usage.completion_tokens,
    }

    try:
        client.chat.completions.create(model="herd", messages=[], max_tokens=4)
        raise AssertionError("an empty message list was accepted")
    except openai.BadRequestError as error:
        out["error"] = {"status": error.status_code, "param": error.body.get("param")}

    print(json.dumps(out))


if __name__ == "__main__":
    main()
