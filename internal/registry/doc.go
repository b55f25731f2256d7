// Package registry is the one HTTP transport every ferry command uses to talk
// to registries: TLS trust, plain http, retries, User-Agent, credentials and
// the errors an operator reads.
//
// # Retries
//
// Retries happen in exactly one layer, the RoundTripper behind
// Client.Transport. RemoteOptions switches go-containerregistry's own retry
// layer off (its transport retry and its whole-blob upload retry), so a
// failing request reaches the registry RetryPolicy.Attempts times, never
// Attempts×3.
//
//   - Retried: GET, HEAD and any request whose body is empty or can be
//     re-obtained (GetBody), on connection resets/EOF/timeouts and on 408,
//     429, 500, 502, 503, 504. A streamed blob PATCH is not retried, nor is
//     a request under SingleAttempt (a blob PUT: see Client.Retry).
//   - Backoff: Base·2^(n-1) with jitter in [½, 1]×, each wait capped at MaxWait.
//   - Retry-After (seconds or HTTP date) on 429/503 replaces the backoff. If it
//     exceeds MaxWait, ferry does not sleep through it: a 429 fails at once
//     with a *RateLimitError saying when to retry, a 503 is returned as is.
//   - Docker Hub's pull limit (429 from index.docker.io, or any 429 carrying
//     ratelimit-* headers, with code TOOMANYREQUESTS or no body) without a
//     Retry-After fails at once with a *RateLimitError that shows
//     ratelimit-limit and ratelimit-remaining and suggests logging in or
//     --mirror. The window is six hours; retrying after seconds or a minute
//     only spends more of the quota and delays the answer.
//   - Waiting ends as soon as the request's context is done.
//   - A GET answered 200 whose body fails mid-way (reset, unexpected EOF,
//     an HTTP/2 stream reset) resumes inside the same Read: "Range:
//     bytes=N-" from the N bytes already handed over; a 206 must start at N
//     (Content-Range), a 200 has its first N bytes skipped, anything else
//     fails. Only content that cannot change is resumed (a digest in the
//     URL, or a repeated Docker-Content-Digest or strong ETag). Each resume
//     is one more attempt against the same budget, after the same backoff.
//   - Client.FetchBlob verifies size and digest as bytes pass into a
//     restartable Sink and fetches a blob that does not match once more
//     from scratch (Sink.Reset); Client.OpenBlob is the same check for a
//     consumer that cannot restart (the Read that would complete a wrong
//     blob returns the error and none of its bytes, so an upload it feeds
//     ends short and the registry commits nothing). Both fail with a *BlobError naming blob, registry and
//     bytes received; the caller adds the image.
//   - Client.Retry restarts a whole step (a blob upload in a new session,
//     sent under SingleAttempt) on transient errors and once on a digest
//     mismatch, with the same budget and backoff.
//
// # TLS and plain http
//
// Roots are the system pool plus --ca-cert files, plus docker's certs.d
// layout for the host (DIR/host[:port]/*.crt as CAs, *.cert + *.key as
// client certificates). Verification is skipped globally
// (--insecure-skip-tls-verify) or per host (Configure, from a mapping file's
// skip-tls-verify). --plain-http forces http for every registry; otherwise,
// as docker does, only localhost, 127.0.0.0/8 and ::1 may fall back to http.
// go-containerregistry would also fall back for RFC 1918 addresses; the
// transport refuses that with ErrPlainHTTPRefused.
//
// # Credentials
//
// Keychain.Resolve takes the explicit logins (flags first, then a mapping
// file's auth), then --auth-file (docker config.json or a Kubernetes pull
// secret), then the docker keychain: the one place that order lives.
// Docker Hub's names are one host. Credentials print as host, user and
// source only. Host.Check (and CheckAuth) verifies credentials before any
// blob moves.
//
// # Connections
//
// Client.Host gives one *Host per registry and credential: it pings /v2/
// once and, against a Bearer registry, exchanges the credential for one
// token per set of scopes. Callers declare the repositories of a run up
// front (Host.Want), so one token (a few for very long lists: each token
// request carries at most 3 KiB of scopes, because the token travels in a
// request header) serves them all. Host.Repo hands out one authenticated
// *Repo per repository and scope set: Do for requests ferry writes itself,
// RemoteOptions for go-containerregistry's remote package (no ping or token
// of its own), Blob for a plain blob GET. A token is renewed shortly before
// it expires; after Host.Renew (the credential's rights changed: Harbor
// projects were created); and once on a 401 that says the token lacks
// rights (a Bearer challenge for scopes it was asked for, or Harbor's
// Basic challenge), the request then being sent again if its body can be
// re-read. Requests refused with the same token share that renewal, and a
// renewed token that is refused before it ever worked is final: no
// renewal storms.
package registry
