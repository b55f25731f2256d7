package main

import (
	"fmt"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/internal/registry"
)

// TestDescribeErrorTypedBlob: a blob error names its blob and registry in
// the --json error object from its type, not from the message text; the
// first digest of the text would be the image's here.
func TestDescribeErrorTypedBlob(t *testing.T) {
	img := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("1", 64)}
	blob := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("a", 64)}
	err := fmt.Errorf("image src.example/app@%s: %w", img,
		&registry.BlobError{Registry: "src.example", Digest: blob, Received: 10, Err: registry.ErrBlobMismatch})
	je := describeError(err)
	if je.Blob != blob.String() {
		t.Errorf("blob = %q, want %q", je.Blob, blob)
	}
	if je.Registry != "src.example" {
		t.Errorf("registry = %q, want src.example", je.Registry)
	}
	if je.ExitCode != exitFailed || je.Message != err.Error() {
		t.Errorf("exit %d, message %q", je.ExitCode, je.Message)
	}
}
