//! `authmd agent mcp`: the agent side of auth.md as an MCP server over
//! stdio (rmcp, the official Rust SDK), for any MCP host. The tools carry
//! the names and argument names of WorkOS's agent client
//! (dialect-latest.md §6), so configurations written for it work
//! unchanged, and add `authmd_status` and `authmd_revoke`. Every tool
//! works in both dialects, over the same credential store as `authmd
//! agent`. Results are JSON text; failures are `isError` results with
//! `{error, message, status?, advice}`, `advice` a sentence a model can
//! act on (and `warnings`, as on a success, when the service's refusal was
//! read past a defect). Nothing is written to stdout but the protocol.

use std::sync::Arc;

use authmd_client::agent::{Agent, Authenticate, advice};
use authmd_client::{ClientError, ID_JAG};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Map, Value, json};

/// Largest response body returned to the model.
const MAX_BODY: usize = 256 * 1024;

#[derive(Clone)]
pub struct Server {
    agent: Arc<Agent>,
}

fn schema(v: Value) -> Arc<Map<String, Value>> {
    Arc::new(v.as_object().cloned().unwrap_or_default())
}

fn tools() -> Vec<Tool> {
    let issuer = json!({"type": "string", "description": "The service: its issuer URL (or any URL of its API)."});
    let resource = json!({"type": "string", "description": "RFC 8707 resource to bind the access token to (current dialect)."});
    vec![
        Tool::new(
            "authmd_authenticate",
            "Get a credential for an auth.md service (either dialect). Reuses what is kept; otherwise registers with an ID-JAG if given, else with the email where the service requires one, else anonymously. With an email and an anonymous registration, starts the claim so the user can grant wider scopes. The result says what to do next (for a claim: a link to give the user, or an email they got; then call authmd_complete_claim with the 6-digit code they read back).",
            schema(json!({
                "type": "object",
                "properties": {
                    "issuer": issuer,
                    "email": {"type": "string", "description": "The user's email: to register email-required, or to start the claim."},
                    "resource": resource,
                    "id_jag": {"type": "string", "description": format!("A provider-signed ID-JAG ({ID_JAG}) whose aud is this service.")},
                    "force_reregister": {"type": "boolean", "description": "Register again even if a registration is kept."}
                },
                "required": ["issuer"]
            })),
        ),
        Tool::new(
            "authmd_complete_claim",
            "Complete the claim with the 6-digit code the user read from the service's page; the credential then holds the post-claim scopes.",
            schema(json!({
                "type": "object",
                "properties": {
                    "issuer": issuer,
                    "user_code": {"type": "string", "description": "The 6-digit code the user read back."},
                    "resource": resource
                },
                "required": ["issuer", "user_code"]
            })),
        ),
        Tool::new(
            "authmd_fetch",
            "Make an HTTP request with the kept credential. The credential is sent only to URLs under the resource it was issued for; it is renewed on the way (and once more after a 401). Returns {status, headers, body}.",
            schema(json!({
                "type": "object",
                "properties": {
                    "issuer": issuer,
                    "url": {"type": "string", "description": "The URL to call, under the service's resource."},
                    "method": {"type": "string", "description": "HTTP method (default GET)."},
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Extra request headers."},
                    "body": {"type": "string", "description": "Request body (Content-Type defaults to application/json)."},
                    "resource": {"type": "string", "description": "Accepted for compatibility; the access token's resource is the one given to authmd_authenticate or authmd_complete_claim."}
                },
                "required": ["issuer", "url"]
            })),
        ),
        Tool::new(
            "authmd_status",
            "What is kept per service: dialect, registration, scopes, claim state, expiries. Never the secrets.",
            schema(json!({
                "type": "object",
                "properties": {"issuer": {"type": "string", "description": "Only this service."}}
            })),
        ),
        Tool::new(
            "authmd_revoke",
            "End the kept credential at the service (RFC 7009) and forget the registration.",
            schema(json!({
                "type": "object",
                "properties": {"issuer": issuer},
                "required": ["issuer"]
            })),
        ),
    ]
}

fn ok(v: Value) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(
        serde_json::to_string_pretty(&v).unwrap_or_default(),
    )])
}

fn fail(code: &str, message: &str, status: Option<u16>, advice: &str) -> CallToolResult {
    let mut v = json!({"error": code, "message": message, "advice": advice});
    if let Some(s) = status {
        v["status"] = json!(s);
    }
    CallToolResult::error(vec![ContentBlock::text(
        serde_json::to_string_pretty(&v).unwrap_or_default(),
    )])
}

fn failed(e: &ClientError) -> CallToolResult {
    let (code, status, message) = match e {
        ClientError::Protocol {
            status,
            code,
            message,
            ..
        } => (code.clone(), Some(*status), message.clone()),
        ClientError::Discovery(m) => ("discovery_failed".into(), None, m.clone()),
        ClientError::Unsupported(m) => ("unsupported".into(), None, m.clone()),
        ClientError::InvalidResponse(m) => ("unexpected_response".into(), None, m.clone()),
        ClientError::Reauthenticate(m) => ("reauthentication_required".into(), None, m.clone()),
        ClientError::Store(e) => ("store_failed".into(), None, e.to_string()),
        ClientError::Http(e) => ("network_error".into(), None, e.to_string()),
    };
    let mut v = json!({"error": code, "message": message, "advice": advice(e)});
    if let Some(s) = status {
        v["status"] = json!(s);
    }
    if let Some(w) = e.warning() {
        // Where a success carries its warnings.
        v["warnings"] = json!([w]);
    }
    CallToolResult::error(vec![ContentBlock::text(
        serde_json::to_string_pretty(&v).unwrap_or_default(),
    )])
}

fn string(args: &Map<String, Value>, name: &str) -> Option<String> {
    args.get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl Server {
    pub fn new(agent: Agent) -> Server {
        Server {
            agent: Arc::new(agent),
        }
    }

    async fn call(&self, name: &str, args: Map<String, Value>) -> CallToolResult {
        let issuer = string(&args, "issuer");
        let need_issuer = || {
            fail(
                "invalid_request",
                "issuer is required",
                None,
                "Pass the service's issuer URL (or any URL of its API) as `issuer`.",
            )
        };
        match name {
            "authmd_authenticate" => {
                let Some(target) = issuer else {
                    return need_issuer();
                };
                let req = Authenticate {
                    target,
                    email: string(&args, "email"),
                    id_jag: string(&args, "id_jag"),
                    resource: string(&args, "resource"),
                    force_reregister: args
                        .get("force_reregister")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                    ..Authenticate::default()
                };
                match self.agent.authenticate(req).await {
                    Ok(o) => ok(serde_json::to_value(o).unwrap_or_default()),
                    Err(e) => failed(&e),
                }
            }
            "authmd_complete_claim" => {
                let Some(target) = issuer else {
                    return need_issuer();
                };
                let Some(code) = string(&args, "user_code") else {
                    return fail(
                        "invalid_request",
                        "user_code is required",
                        None,
                        "Ask the user for the 6-digit code shown on the page, and pass it as `user_code`.",
                    );
                };
                let resource = string(&args, "resource");
                match self
                    .agent
                    .complete_claim_for(Some(&target), &code, resource.as_deref())
                    .await
                {
                    Ok(o) => ok(serde_json::to_value(o).unwrap_or_default()),
                    Err(e) => failed(&e),
                }
            }
            "authmd_fetch" => self.fetch(issuer, &args).await,
            "authmd_status" => match self.agent.status() {
                Ok(entries) => {
                    let entries: Vec<_> = entries
                        .into_iter()
                        .filter(|e| {
                            issuer.as_deref().is_none_or(|i| {
                                e.issuer.trim_end_matches('/') == i.trim_end_matches('/')
                            })
                        })
                        .collect();
                    ok(json!({"services": entries}))
                }
                Err(e) => failed(&e),
            },
            "authmd_revoke" => {
                let Some(target) = issuer else {
                    return need_issuer();
                };
                match self.agent.revoke(Some(&target)).await {
                    Ok(id) => ok(json!({"revoked": true, "registration_id": id, "issuer": target})),
                    Err(e) => failed(&e),
                }
            }
            other => fail(
                "unknown_tool",
                &format!("no tool named {other:?}"),
                None,
                "List the tools and call one of them.",
            ),
        }
    }

    async fn fetch(&self, issuer: Option<String>, args: &Map<String, Value>) -> CallToolResult {
        let Some(url) = string(args, "url") else {
            return fail(
                "invalid_request",
                "url is required",
                None,
                "Pass the URL to call as `url`.",
            );
        };
        // The credential goes only to the service it was issued by.
        if let Some(issuer) = &issuer {
            match self.agent.records() {
                Ok(all) => {
                    let owner = all.iter().find(|(_, r)| r.service.covers(&url));
                    match owner {
                        Some((i, _)) if i.trim_end_matches('/') == issuer.trim_end_matches('/') => {
                        }
                        Some((i, _)) => {
                            return fail(
                                "credential_origin_mismatch",
                                &format!("{url} belongs to {i}, not to {issuer}"),
                                None,
                                "Call authmd_fetch with the issuer that owns this URL.",
                            );
                        }
                        None => {
                            return fail(
                                "credential_origin_mismatch",
                                &format!(
                                    "{url} is not under the resource of any credential kept for {issuer}"
                                ),
                                None,
                                "A credential is only sent to the API it was issued for: authenticate with the service that owns this URL first.",
                            );
                        }
                    }
                }
                Err(e) => return failed(&e),
            }
        }
        let method = match string(args, "method") {
            Some(m) => match reqwest::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(m) => m,
                Err(_) => {
                    return fail(
                        "invalid_request",
                        &format!("{m:?} is not an HTTP method"),
                        None,
                        "Use GET, POST, PUT, PATCH or DELETE.",
                    );
                }
            },
            None => reqwest::Method::GET,
        };
        let mut headers: Vec<(String, String)> = Vec::new();
        if let Some(h) = args.get("headers").and_then(Value::as_object) {
            for (k, v) in h {
                if k.eq_ignore_ascii_case("authorization") {
                    return fail(
                        "invalid_request",
                        "the Authorization header is set by authmd",
                        None,
                        "Leave out the Authorization header.",
                    );
                }
                if let Some(v) = v.as_str() {
                    headers.push((k.clone(), v.to_owned()));
                }
            }
        }
        let body = string(args, "body");
        let build = |mut r: reqwest::RequestBuilder| {
            for (k, v) in &headers {
                r = r.header(k, v);
            }
            if let Some(b) = &body {
                if !headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                {
                    r = r.header("content-type", "application/json");
                }
                r = r.body(b.clone());
            }
            r
        };
        let fetched = match self.agent.fetch(&url, method, build).await {
            Ok(f) => f,
            Err(e) => return failed(&e),
        };
        let status = fetched.response.status().as_u16();
        let response_headers: Map<String, Value> = fetched
            .response
            .headers()
            .iter()
            .filter(|(k, _)| {
                matches!(
                    k.as_str(),
                    "content-type" | "www-authenticate" | "location" | "retry-after"
                )
            })
            .filter_map(|(k, v)| Some((k.to_string(), json!(v.to_str().ok()?))))
            .collect();
        let bytes = match fetched.response.bytes().await {
            Ok(b) => b,
            Err(e) => return failed(&ClientError::Http(e)),
        };
        let truncated = bytes.len() > MAX_BODY;
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_BODY)]).into_owned();
        let mut v = json!({
            "status": status,
            "headers": response_headers,
            "body": text,
        });
        if truncated {
            v["truncated"] = json!(true);
        }
        if let Some(how) = fetched.renewed {
            v["renewed"] = json!(how);
        }
        ok(v)
    }
}

impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("authmd", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "auth.md for agents: call authmd_authenticate with a service's issuer (or API URL), then authmd_fetch. For wider scopes, authenticate with the user's email, give them the link or tell them about the email, and call authmd_complete_claim with the 6-digit code they read back.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let args = request.arguments.unwrap_or_default();
        Ok(self.call(&request.name, args).await.into())
    }
}

/// Serves on stdin/stdout until the host closes them.
pub async fn serve(agent: Agent) -> anyhow::Result<()> {
    let running = Server::new(agent).serve(rmcp::transport::stdio()).await?;
    running.waiting().await?;
    Ok(())
}
