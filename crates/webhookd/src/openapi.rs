//! The OpenAPI 3.1 document served at `/openapi.json`, built from
//! [`ROUTES`] so that every route is described.

use serde_json::{Map, Value, json};

use crate::routes::{Op, ROUTES};

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn body(name: &str) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": schema(name) } } })
}

fn response(description: &str, schema_name: Option<&str>) -> Value {
    match schema_name {
        Some(name) => json!({
            "description": description,
            "content": { "application/json": { "schema": schema(name) } }
        }),
        None => json!({ "description": description }),
    }
}

fn error(description: &str) -> Value {
    response(description, Some("Error"))
}

fn query(name: &str, description: &str, schema: &Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema })
}

fn tenant_query() -> Value {
    query(
        "tenant",
        "Admin token only: act in this tenant (a tenant token always acts in its own).",
        &json!({"type": "string"}),
    )
}

/// Summary, extra (query) parameters, request body, and responses of an operation.
type Description = (
    &'static str,
    Vec<Value>,
    Option<Value>,
    Vec<(&'static str, Value)>,
);

/// How `op` is described.
fn describe(op: Op) -> Description {
    let bad = ("400", error("Malformed JSON or wrong Content-Type."));
    let big = ("413", error("The body is larger than --max-body-bytes."));
    let invalid = (
        "422",
        error(
            "An invalid field; `error.field` names it. Includes a `url` / `target_url` longer than --max-url-bytes and `headers` over --max-endpoint-headers or --max-endpoint-header-bytes.",
        ),
    );
    let missing = ("404", error("Unknown id (or of another tenant)."));
    match op {
        Op::IngestEvent => (
            "Accept an event for delivery (seed 003 compatible). Routed to `target_url`, else to every enabled endpoint whose event-type globs match `event_type`, else to the default target (TARGET_URL). Answers only once the event is durable.",
            vec![],
            Some(body("EventIn")),
            vec![
                (
                    "202",
                    response("Accepted: stored and scheduled.", Some("Accepted")),
                ),
                bad,
                big,
                (
                    "409",
                    error(
                        "`too_many_endpoints`: a new `target_url` needs an implicit endpoint, and the tenant already has --max-endpoints-per-tenant endpoints. Nothing is stored.",
                    ),
                ),
                invalid,
                (
                    "503",
                    error("Shutting down, the queue is full, or the store is unavailable; retry."),
                ),
            ],
        ),
        Op::GetEvent => (
            "An event, each of its deliveries and their attempts.",
            vec![tenant_query()],
            None,
            vec![
                ("200", response("The event.", Some("EventStatus"))),
                missing,
            ],
        ),
        Op::CreateEndpoint => (
            "Create an endpoint. The secret (generated when not given) is returned only in this response.",
            vec![],
            Some(body("EndpointIn")),
            vec![
                ("201", response("Created.", Some("EndpointCreated"))),
                bad,
                big,
                (
                    "409",
                    error(
                        "`conflict`: an endpoint with this id exists; or `too_many_endpoints`: the tenant (or, without one, the untenanted scope) already has --max-endpoints-per-tenant endpoints.",
                    ),
                ),
                invalid,
            ],
        ),
        Op::ListEndpoints => (
            "List endpoints (a tenant token sees its tenant's; the admin all, or one tenant's).",
            vec![tenant_query()],
            None,
            vec![("200", response("The endpoints.", Some("EndpointList")))],
        ),
        Op::GetEndpoint => (
            "One endpoint (never its secret).",
            vec![],
            None,
            vec![
                ("200", response("The endpoint.", Some("Endpoint"))),
                missing,
            ],
        ),
        Op::UpdateEndpoint => (
            "Replace an endpoint. Fields left out take their defaults, except `secret` and `tenant`, which are kept.",
            vec![],
            Some(body("EndpointIn")),
            vec![
                ("200", response("The endpoint as stored.", Some("Endpoint"))),
                bad,
                big,
                missing,
                invalid,
            ],
        ),
        Op::DeleteEndpoint => (
            "Delete an endpoint and its deliveries.",
            vec![],
            None,
            vec![("204", response("Deleted.", None)), missing],
        ),
        Op::ListDeadLetters => (
            "Dead letters (deliveries that exhausted their retries or failed for good), oldest first.",
            vec![
                query(
                    "endpoint_id",
                    "Only this endpoint's.",
                    &json!({"type": "string"}),
                ),
                query(
                    "limit",
                    "Most to return (1 to 1000, default 100).",
                    &json!({"type": "integer", "minimum": 1, "maximum": 1000}),
                ),
                tenant_query(),
            ],
            None,
            vec![
                ("200", response("The dead letters.", Some("DeadLetterList"))),
                invalid,
            ],
        ),
        Op::ReplayDeadLetters => (
            "Send every dead letter of the tenant (the admin: of every tenant, or of `tenant`) again with a fresh retry budget.",
            vec![tenant_query()],
            None,
            vec![("200", response("How many were replayed.", Some("Replayed")))],
        ),
        Op::ReplayDeadLetter => (
            "Send one dead letter again with a fresh retry budget.",
            vec![],
            None,
            vec![
                ("200", response("Replayed.", Some("Replayed"))),
                ("404", error("No such dead letter.")),
            ],
        ),
        Op::Metrics => (
            "Prometheus metrics (admin token).",
            vec![],
            None,
            vec![
                (
                    "200",
                    json!({"description": "Prometheus text format.", "content": {"text/plain": {"schema": {"type": "string"}}}}),
                ),
                ("403", error("A tenant token.")),
            ],
        ),
        Op::Healthz => (
            "Liveness.",
            vec![],
            None,
            vec![("200", response("Alive.", Some("Health")))],
        ),
        Op::OpenApi => (
            "This document.",
            vec![],
            None,
            vec![(
                "200",
                json!({"description": "OpenAPI 3.1 document.", "content": {"application/json": {"schema": {"type": "object"}}}}),
            )],
        ),
    }
}

fn path_params(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect()
}

fn operation(op: Op, path: &str) -> Value {
    let (summary, extra, request, responses) = describe(op);
    let mut responses: Map<String, Value> = responses
        .into_iter()
        .map(|(code, v)| (code.to_owned(), v))
        .collect();
    let mut v = json!({ "operationId": op.operation_id(), "summary": summary });
    if !extra.is_empty() {
        responses.entry("422").or_insert_with(|| {
            error("An unknown or invalid query parameter (or, for a tenant token, `tenant` naming another tenant); `error.field` names it.")
        });
    }
    if op.authenticated() && op != Op::Metrics {
        responses
            .entry("503")
            .or_insert_with(|| error("The store is unavailable; retry."));
    }
    let mut parameters = path_params(path);
    parameters.extend(extra);
    if !parameters.is_empty() {
        v["parameters"] = Value::Array(parameters);
    }
    if let Some(request) = request {
        v["requestBody"] = request;
    }
    if op.authenticated() {
        responses.insert(
            "401".into(),
            error("A token is configured and the request has none, or a wrong one."),
        );
    } else {
        v["security"] = json!([]);
    }
    v["responses"] = Value::Object(responses);
    v
}

fn components() -> Value {
    let duration = json!({"type": "string", "description": "A whole number and a unit: ns, us, ms, s, m, h or d, e.g. \"5s\".", "examples": ["500ms", "5s", "2m"]});
    let nullable_string = json!({"type": ["string", "null"]});
    json!({
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "The admin token (--api-token) or a tenant token (--tenant-token)."}
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string", "examples": ["invalid_field", "bad_request", "not_found", "unauthorized", "payload_too_large", "conflict", "too_many_endpoints"]},
                        "message": {"type": "string"},
                        "field": {"type": "string", "description": "The invalid field (422 only)."}
                    }
                }}
            },
            "EventIn": {
                "type": "object",
                "additionalProperties": false,
                "required": ["payload"],
                "properties": {
                    "payload": {"description": "Any JSON; its serialization is the request body sent."},
                    "target_url": {"type": "string", "format": "uri", "description": "Deliver to this URL (an implicit endpoint per URL, signed with WEBHOOK_SECRET; it counts against --max-endpoints-per-tenant). At most --max-url-bytes bytes."},
                    "event_type": {"type": "string", "description": "Routes to endpoints whose globs match."},
                    "id": {"type": "string", "description": "Idempotency: the same id accepted twice is delivered once per endpoint. Generated when absent."},
                    "tenant": {"type": "string", "description": "Admin token only; a tenant token implies its tenant."}
                }
            },
            "Accepted": {
                "type": "object",
                "required": ["id", "status"],
                "properties": {"id": {"type": "string"}, "status": {"const": "accepted"}}
            },
            "Attempt": {
                "type": "object",
                "properties": {
                    "started_at": {"type": "string", "format": "date-time"},
                    "duration_ms": {"type": "integer"},
                    "status": {"type": ["integer", "null"]},
                    "error": nullable_string,
                    "response_excerpt": nullable_string
                }
            },
            "Delivery": {
                "type": "object",
                "properties": {
                    "event_id": {"type": "string"},
                    "endpoint_id": {"type": "string"},
                    "tenant": nullable_string,
                    "status": {"enum": ["pending", "in_flight", "delivered", "dead"]},
                    "attempt_count": {"type": "integer"},
                    "last_status_code": {"type": ["integer", "null"]},
                    "last_error": nullable_string,
                    "next_attempt_at": {"type": ["string", "null"], "format": "date-time", "description": "When pending."},
                    "lease_until": {"type": ["string", "null"], "format": "date-time", "description": "When in flight."},
                    "finished_at": {"type": ["string", "null"], "format": "date-time", "description": "When delivered or dead."},
                    "created_at": {"type": "string", "format": "date-time"},
                    "updated_at": {"type": "string", "format": "date-time"}
                }
            },
            "EventStatus": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "tenant": nullable_string,
                    "event_type": nullable_string,
                    "created_at": {"type": "string", "format": "date-time"},
                    "payload": {},
                    "status": {"enum": ["pending", "delivered", "dead", "accepted"], "description": "pending while any delivery is; else dead if any is; else delivered."},
                    "attempt_count": {"type": "integer"},
                    "deliveries": {"type": "array", "items": {"allOf": [
                        schema("Delivery"),
                        {"type": "object", "properties": {"attempts": {"type": "array", "items": schema("Attempt")}}}
                    ]}}
                }
            },
            "RateLimit": {
                "type": "object", "additionalProperties": false, "required": ["rate_per_sec", "burst"],
                "properties": {"rate_per_sec": {"type": "integer", "minimum": 0}, "burst": {"type": "integer", "minimum": 1}}
            },
            "RetryPolicy": {
                "oneOf": [
                    {"type": "object", "additionalProperties": false, "required": ["kind"], "properties": {
                        "kind": {"const": "exponential"}, "initial": duration, "max": duration,
                        "multiplier": {"type": "number", "minimum": 1}, "max_attempts": {"type": "integer", "minimum": 1},
                        "jitter": {"type": "number", "minimum": 0, "maximum": 1}
                    }},
                    {"type": "object", "additionalProperties": false, "required": ["kind", "delays", "max_attempts"], "properties": {
                        "kind": {"const": "schedule"}, "delays": {"type": "array", "minItems": 1, "items": duration},
                        "max_attempts": {"type": "integer", "minimum": 1}
                    }}
                ]
            },
            "CircuitBreaker": {
                "type": "object", "additionalProperties": false,
                "properties": {
                    "failure_threshold": {"type": "integer", "minimum": 1},
                    "success_threshold": {"type": "integer", "minimum": 1},
                    "open_timeout": duration,
                    "half_open_max_requests": {"type": "integer", "minimum": 1}
                }
            },
            "Batching": {
                "type": "object", "required": ["max_events", "max_wait"],
                "properties": {"max_events": {"type": "integer", "minimum": 1, "maximum": 1000}, "max_wait": duration}
            },
            "Compression": {
                "type": "object", "required": ["encoding", "min_size"],
                "properties": {"encoding": {"enum": ["gzip", "zstd"]}, "min_size": {"type": "integer", "minimum": 0}}
            },
            "SignatureScheme": {
                "description": "A name, or the tagged form (split_timestamp may set its header names).",
                "oneOf": [
                    {"enum": ["standard_webhooks", "body_only", "inline_timestamp", "split_timestamp"]},
                    {"type": "object", "required": ["kind"], "properties": {
                        "kind": {"enum": ["standard_webhooks", "body_only", "inline_timestamp", "split_timestamp"]},
                        "signature_header": {"type": "string"}, "timestamp_header": {"type": "string"}
                    }}
                ]
            },
            "EndpointIn": {
                "type": "object",
                "additionalProperties": false,
                "required": ["url"],
                "properties": {
                    "id": {"type": "string", "description": "Generated as ep_<uuid> when absent. The prefix url_ is reserved."},
                    "url": {"type": "string", "format": "uri", "description": "At most --max-url-bytes bytes (default 2048)."},
                    "secret": {"type": "string", "description": "whsec_<base64> or any string (raw bytes), not starting with \"sealed:\". Generated when absent on create; kept when absent on replace. Encrypted in the store when webhookd has --secret-encryption-key."},
                    "event_types": {"type": "array", "items": {"type": "string"}, "description": "Globs such as user.* ; empty: every type."},
                    "tenant": {"type": "string"},
                    "rate_limit": schema("RateLimit"),
                    "retry_policy": schema("RetryPolicy"),
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}, "description": "At most --max-endpoint-headers headers (default 32) of names up to 256 bytes, names and values totalling at most --max-endpoint-header-bytes (default 8192)."},
                    "timeout": duration,
                    "enabled": {"type": "boolean", "default": true},
                    "batching": schema("Batching"),
                    "ordering": {"enum": ["unordered", "strict"], "default": "unordered"},
                    "signature_scheme": schema("SignatureScheme"),
                    "max_in_flight": {"type": "integer", "minimum": 1},
                    "circuit_breaker": schema("CircuitBreaker"),
                    "compression": schema("Compression")
                }
            },
            "Endpoint": {
                "type": "object",
                "description": "An endpoint as stored, without its secret.",
                "properties": {
                    "id": {"type": "string"},
                    "url": {"type": "string"},
                    "tenant": nullable_string,
                    "event_types": {"type": "array", "items": {"type": "string"}},
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                    "rate_limit": {"anyOf": [schema("RateLimit"), {"type": "null"}]},
                    "retry_policy": {"anyOf": [schema("RetryPolicy"), {"type": "null"}]},
                    "circuit_breaker": {"anyOf": [schema("CircuitBreaker"), {"type": "null"}]},
                    "timeout": {"type": ["string", "null"]},
                    "max_in_flight": {"type": ["integer", "null"]},
                    "enabled": {"type": "boolean"},
                    "disabled_reason": nullable_string,
                    "signature_scheme": {"type": "object"},
                    "batching": {"anyOf": [schema("Batching"), {"type": "null"}]},
                    "ordering": {"enum": ["unordered", "strict"]},
                    "compression": {"anyOf": [schema("Compression"), {"type": "null"}]},
                    "has_secret": {"type": "boolean"},
                    "implicit": {"type": "boolean", "description": "Made by POST /events for a target URL."}
                }
            },
            "EndpointCreated": {
                "allOf": [schema("Endpoint"), {"type": "object", "required": ["secret"], "properties": {"secret": {"type": "string", "description": "Shown only here."}}}]
            },
            "EndpointList": {
                "type": "object", "properties": {"endpoints": {"type": "array", "items": schema("Endpoint")}}
            },
            "DeadLetterList": {
                "type": "object", "properties": {"dead_letters": {"type": "array", "items": schema("Delivery")}}
            },
            "Replayed": {
                "type": "object", "properties": {"replayed": {"type": "integer"}}
            },
            "Health": {
                "type": "object", "properties": {"status": {"const": "ok"}}
            }
        }
    })
}

/// The OpenAPI 3.1 document of every route in [`ROUTES`].
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[route.method.to_ascii_lowercase()] = operation(route.op, route.path);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "webhookd",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The webhook delivery service: accept events, deliver them signed with retries, inspect and replay the dead-letter queue."
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": components(),
    })
}
