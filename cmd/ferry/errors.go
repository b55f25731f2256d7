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
		errors.Is(err, push.ErrHaveTarget) ||
		// A file that is not a bundle, or a bundle import refused when
		// it opened it (a hostile or truncated structure), before any
		// request.
		errors.Is(err, bundle.ErrNotBundle) ||
		errors.Is(err, push.ErrBundleRefused)
}

func hint(err error) string {
	var refused *push.RefusalError
	switch {
	case errors.As(err, &refused):
		return refused.Hint()
	case errors.Is(err, push.ErrPushDenied), errors.Is(err, push.ErrProjectMissing):
		return "" // the message names the fix; the credentials are fine
	case errors.Is(err, registry.ErrUnauthorized):
		return "check the username and password; pass a password with --password-stdin (single-quote robot$ names in a shell)"
	case errors.Is(err, registry.ErrTLS):
		return "trust the registry's CA with --ca-cert FILE or --certs-dir DIR, or (for tests only) --insecure-skip-tls-verify"
	case errors.Is(err, bundle.ErrNotBundle):
		return "give the .tar file ferry export wrote (or its first volume, BUNDLE.tar.000); mapping files go to -f"
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
	// network, bundle (damaged or unsupported), stale-inventory (the target
	// no longer holds what the inventory a bundle was cut against claimed),
	// interrupted, a Harbor project policy that refused the write (quota,
	// immutable-tag, proxy-cache), or failed.
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

// causer is an error that stands for several failures (a sync whose
// tasks failed, each for its images) and gives their errors.
type causer interface{ Causes() []error }

// errorKind is the --json kind of err. A run that failed as a whole
// because its parts failed takes their kind when they all share one
// (every image failed to reach an unreachable registry: network).
func errorKind(err error) string {
	k := ownKind(err)
	if k != "failed" {
		return k
	}
	var c causer
	if !errors.As(err, &c) {
		return k
	}
	common := ""
	for _, cause := range c.Causes() {
		ck := errorKind(cause)
		if ck == "input" || ck == "interrupted" || (common != "" && ck != common) {
			return k
		}
		common = ck
	}
	if common == "" {
		return k
	}
	return common
}

func ownKind(err error) string {
	var (
		ie      interrupted
		ne      net.Error
		refused *push.RefusalError
	)
	switch {
	case errors.As(err, &ie):
		return "interrupted"
	case errors.As(err, &refused): // before auth: Harbor says 403 DENIED
		return refused.Kind
	case errors.Is(err, bundle.ErrNotBundle):
		return "input"
	case errors.Is(err, bundle.ErrCorrupt), errors.Is(err, bundle.ErrUnsupported), errors.Is(err, bundle.ErrVerify),
		errors.Is(err, bundle.ErrDigestMismatch), errors.Is(err, bundle.ErrShortBlob),
		errors.Is(err, bundle.ErrUnsigned), errors.Is(err, bundle.ErrBadSignature):
		// Before input: a bundle refused before any request is exit 2,
		// and still of kind bundle.
		return "bundle"
	case isUsage(err), errors.Is(err, fs.ErrNotExist) && !errors.Is(err, bundle.ErrCorrupt):
		return "input"
	case errors.Is(err, push.ErrStale), errors.Is(err, push.ErrHaveMissing):
		return "stale-inventory"
	case errors.Is(err, push.ErrProjectMissing):
		// Before auth: found at push time, it carries Harbor's 401/403, but
		// the credentials are fine (the same kind as when the API says so).
		return "failed"
	case errors.Is(err, registry.ErrUnauthorized), errors.Is(err, registry.ErrDenied):
		return "auth"
	case errors.Is(err, registry.ErrUnavailable), errors.Is(err, registry.ErrTLS), errors.Is(err, registry.ErrRateLimited),
		errors.Is(err, registry.ErrPlainHTTPRefused), errors.As(err, &ne):
		return "network"
	}
	return "failed"
}

// errorRegistry is the registry a registry error names, if any: for a
// run that failed by its parts (causer), the one registry all of them
// name.
func errorRegistry(err error) string {
	if r := ownRegistry(err); r != "" {
		return r
	}
	var c causer
	if !errors.As(err, &c) {
		return ""
	}
	common := ""
	for _, cause := range c.Causes() {
		r := errorRegistry(cause)
		if r == "" || (common != "" && r != common) {
			return ""
		}
		common = r
	}
	return common
}

func ownRegistry(err error) string {
	var (
		re      *registry.Error
		ae      *registry.AuthError
		te      *registry.TLSError
		rle     *registry.RateLimitError
		refused *push.RefusalError
	)
	switch {
	case errors.As(err, &refused):
		return refused.Registry
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
