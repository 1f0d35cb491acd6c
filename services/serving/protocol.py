"""The OpenAI-compatible request bodies serving accepts, and its typed error response."""

from __future__ import annotations

from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.serving.generation import Sampling
from services.serving.routing import RequestRefused

UNSUPPORTED = {
    "logprobs": "log-probabilities",
    "top_logprobs": "log-probabilities",
    "echo": "echoing the prompt with its log-probabilities",
    "tools": "function calling",
    "tool_choice": "function calling",
    "functions": "function calling",
    "function_call": "function calling",
    "parallel_tool_calls": "function calling",
    "logit_bias": "logit bias",
    "best_of": "best-of sampling",
    "presence_penalty": "presence penalty",
    "frequency_penalty": "frequency penalty",
    "suffix": "insertion (suffix)",
}
"""OpenAI parameters this server cannot honour yet: refused by name, never accepted and dropped."""
NEUTRAL: tuple[Any, ...] = (None, False, 0, "", [], {}, "none", "auto")


def refuse_unsupported(body: dict[str, Any]) -> None:
    """A 400 naming the first parameter that asks for what this server cannot do (a neutral value,
    such as `logprobs: false`, `best_of: 1` or `tool_choice: "none"`, asks for nothing)."""
    for name, what in UNSUPPORTED.items():
        value = body.get(name)
        if any(value is v or (type(value) is type(v) and value == v) for v in NEUTRAL) or (
            name == "best_of" and value == 1
        ):
            continue
        raise RequestRefused(
            400, f"`{name}` ({what}) is not supported by this server yet; leave it out of the request",
            kind="invalid_request_error", code="unsupported_parameter", param=name,
        )  # fmt: skip


class _Request(BaseModel):
    # clients send many optional OpenAI fields; the ones that choose weights are refused before this
    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    # OpenAI's seed is a 64-bit integer; torch refuses anything wider, inside a shared batch
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    stop: str | list[str] | None = None
    stream: bool = False
    n: int = Field(default=1, ge=1, le=1, description="one choice per request")
    user: str | None = None

    def sampling(self, default_max: int, limit: int) -> Sampling:
        wanted = self.max_completion_tokens or self.max_tokens or default_max
        if wanted > limit:
            raise ValueError(f"max_tokens {wanted} is above this server's limit {limit}; ask for ≤ {limit}")
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return Sampling(
            max_tokens=wanted, temperature=self.temperature, top_p=self.top_p, seed=self.seed, stop=stops
        )


class ContentPart(BaseModel):
    """One part of a message's content; only `{"type": "text", "text": "..."}` can be served here."""

    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[ContentPart]

    @field_validator("content", mode="before")
    @classmethod
    def _text_or_parts(cls, value: Any) -> Any:
        # checked here, not by the union, so an error names `content` rather than a union branch
        if isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise ValueError("content must be a string or a list of content parts")
        for n, part in enumerate(value):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise ValueError(f'content part {n} must be an object with a string "type"')
            if part["type"] == "text" and not isinstance(part.get("text"), str):
                raise ValueError(f'content part {n} is a text part whose "text" is not a string')
        return value

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        if any(p.type != "text" or p.text is None for p in self.content):
            raise ValueError("only text content parts are supported")
        return "".join(p.text or "" for p in self.content)


class JsonSchemaFormat(BaseModel):
    """`response_format.json_schema`: a named JSON Schema the answer must meet."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str | None = None
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    @field_validator("json_schema")
    @classmethod
    def _a_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                jsonschema.Draft202012Validator.check_schema(value)
            except jsonschema.SchemaError as error:
                raise ValueError(f"not a valid JSON Schema: {error.message}") from None
        return value


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: JsonSchemaFormat | None = None

    def schema_to_meet(self) -> dict[str, Any] | None:
        """The JSON Schema an answer must meet; {} for any JSON object; None for free text."""
        if self.type == "json_object":
            return {"type": "object"}
        if self.type == "json_schema":
            spec = self.json_schema
            return dict(spec.json_schema or {}) if spec is not None else {}
        return None


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    response_format: ResponseFormat | None = None

    def plain_messages(self) -> list[dict[str, str]]:
        return [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in self.messages
        ]


class CompletionRequest(_Request):
    prompt: str | list[str]

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value
        if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], str):
            raise ValueError("send one prompt per request: a string, or a list of exactly one string")
        return value

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


def param_of(loc: tuple[int | str, ...]) -> str:
    """A validation error's location as OpenAI's `param`: `messages[0].content`."""
    param = ""
    for part in loc:
        if isinstance(part, int):
            param += f"[{part}]"
        else:
            param += f".{part}" if param else part
    return param


class ErrorBody(BaseModel):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
