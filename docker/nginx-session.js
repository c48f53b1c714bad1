// nginx-session.js: the session key nginx hashes to pick an lfm2 replica (docker/nginx.conf,
// docs/deployment.md). The client's X-Session-Id header when it sends one, else the top-level
// "user" string of the OpenAI request body, else "" (nginx then balances round-robin).
// Runs in nginx's njs (Debian: libnginx-mod-http-js; the official nginx image ships it).
// r.requestText exists only once nginx has read the body into memory: the upstream hash
// is computed after that as long as proxy_request_buffering stays on and the body fits
// client_body_buffer_size; otherwise it is unset and the header alone decides.
function key(r) {
    var h = r.headersIn['X-Session-Id'];
    if (h) return h;
    var body;
    try {
        body = r.requestText;
    } catch (e) {
        return '';
    }
    if (!body || body.indexOf('"user"') < 0) return '';
    try {
        var d = JSON.parse(body);
        if (d && typeof d === 'object' && typeof d.user === 'string') return d.user;
    } catch (e) {}
    return '';
}

export default { key };
