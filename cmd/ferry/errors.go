package main

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"regexp"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/export"
	"github.com/ferry-airgap/ferry/filter"
	"github.com/ferry-airgap/ferry/internal/registry"
	"github.com/ferry-airgap/ferry/inventory"
	"github.com/ferry-airgap/ferry/mapping"
	"github.com/ferry-airgap/ferry/push"
)

// exitCode maps an error to the exit status: 2 for what the user can fix
// before anything runs, 1 for everything else.
func exitCode(err error) int {
	if isUsage(err) {
		return exitBadUsage
	}
	return exitFailed
}

func isUsage(err error) bool {
	var ue usageError
	return errors.As(err, &ue) ||
		errors.Is(err, mapping.ErrInvalid) ||
		errors.Is(err, filter.ErrSyntax) ||
		errors.Is(err, registry.ErrConfig) ||
		errors.Is(err, export.ErrOutput) ||
		errors.Is(err, inventory.ErrInvalid) ||
		errors.Is(err, push.ErrHaveTarget)
}

func hint(err error) string {
	switch {
	case errors.Is(err, push.ErrPushDenied), errors.Is(err, push.ErrProjectMissing):
		return "" // the message names the fix; the credentials are fine
	case errors.Is(err, registry.ErrUnauthorized):
		return "check the username and password; pass a password with --password-stdin (single-quote robot$ names in a shell)"
	case errors.Is(err, registry.ErrTLS):
		return "trust the registry's CA with --ca-cert FILE or --certs-dir DIR, or (for tests only) --insecure-skip-tls-verify"
	case errors.Is(err, bundle.ErrCorrupt):
		return "the bundle is damaged: compare it with its .sha256 file (sha256sum -c) and copy it again"
	case errors.Is(err, context.Canceled):
		return "interrupted; nothing was left half-written"
	}
	return ""
}

// jsonError is the "error" object of every command's --json output when
// the command exits non-zero.
type jsonError struct {
	Message string `json:"message"`
	// Kind: input (exit 2: a flag, argument or input file to fix), auth,
	// network, bundle (damaged or unsupported), interrupted, or failed.
	Kind     string `json:"kind"`
	ExitCode int    `json:"exitCode"`
	Registry string `json:"registry,omitempty"` // host[:port] concerned
	Image    string `json:"image,omitempty"`    // image concerned (target:tags (source), as the bundle names it)
	Blob     string `json:"blob,omitempty"`     // digest concerned
	Hint     string `json:"hint,omitempty"`
}

var digestInText = regexp.MustCompile(`sha256:[a-f0-9]{64}`)

func describeError(err error) *jsonError {
	je := &jsonError{Message: err.Error(), Kind: errorKind(err), ExitCode: exitCode(err), Registry: errorRegistry(err), Hint: hint(err)}
	if ie, ok := err.(interrupted); ok {
		je.ExitCode = 128 + int(ie.sig)
		je.Hint = ""
	}
	var be *registry.BlobError
	if errors.As(err, &be) {
		je.Blob = be.Digest.String()
		if je.Registry == "" {
			je.Registry = be.Registry
		}
	}
	if fs := bundle.Failures(err); len(fs) > 0 {
		je.Image = fs[0].Image
		if je.Blob == "" {
			je.Blob = fs[0].Digest
		}
	}
	if je.Blob == "" {
		// Errors without a typed blob still name it in their text, wrapped
		// outermost-first ("pulling X: blob sha256:...: ..."): the first
		// digest is the blob.
		je.Blob = digestInText.FindString(je.Message)
	}
	return je
}

func errorKind(err error) string {
	var (
		ie interrupted
		ne net.Error
	)
	switch {
	case errors.As(err, &ie):
		return "interrupted"
	case isUsage(err), errors.Is(err, fs.ErrNotExist) && !errors.Is(err, bundle.ErrCorrupt):
		return "input"
	case errors.Is(err, registry.ErrUnauthorized), errors.Is(err, registry.ErrDenied):
		return "auth"
	case errors.Is(err, bundle.ErrCorrupt), errors.Is(err, bundle.ErrUnsupported), errors.Is(err, bundle.ErrVerify),
		errors.Is(err, bundle.ErrDigestMismatch), errors.Is(err, bundle.ErrShortBlob),
		errors.Is(err, bundle.ErrUnsigned), errors.Is(err, bundle.ErrBadSignature):
		return "bundle"
	case errors.Is(err, registry.ErrUnavailable), errors.Is(err, registry.ErrTLS), errors.Is(err, registry.ErrRateLimited),
		errors.Is(err, registry.ErrPlainHTTPRefused), errors.As(err, &ne):
		return "network"
	}
	return "failed"
}

// errorRegistry is the registry a registry error names, if any.
func errorRegistry(err error) string {
	var (
		re  *registry.Error
		ae  *registry.AuthError
		te  *registry.TLSError
		rle *registry.RateLimitError
	)
	switch {
	case errors.As(err, &ae):
		return ae.Registry
	case errors.As(err, &te):
		return te.Registry
	case errors.As(err, &rle):
		return rle.Registry
	case errors.As(err, &re):
		return re.Registry
	}
	return ""
}
