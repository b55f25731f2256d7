package serve

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// OCI distribution error codes this package answers with.
const (
	CodeBlobUnknown      = "BLOB_UNKNOWN"
	CodeManifestUnknown  = "MANIFEST_UNKNOWN"
	CodeNameUnknown      = "NAME_UNKNOWN"
	CodeDigestInvalid    = "DIGEST_INVALID"
	CodeUnsupported      = "UNSUPPORTED"
	CodeUnauthorized     = "UNAUTHORIZED"
	CodePaginationNumber = "PAGINATION_NUMBER_INVALID"
	// CodeNotFound is not an OCI code: the path names no endpoint.
	CodeNotFound = "NOT_FOUND"
	// CodeUnknown: the bundle could not be read (damaged file, I/O error).
	CodeUnknown = "UNKNOWN"
)

// ociError is one entry of an OCI error body.
type ociError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// WriteError answers with an OCI distribution error body (none for HEAD):
// {"errors":[{"code":code,"message":message,"detail":detail}]}, detail left
// out when nil. ferry serve and ferry cache answer with it.
func WriteError(w http.ResponseWriter, r *http.Request, status int, code, message string, detail any) {
	body, _ := json.Marshal(struct {
		Errors []ociError `json:"errors"`
	}{[]ociError{{Code: code, Message: message, Detail: detail}}})
	body = append(body, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
