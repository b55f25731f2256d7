package test

import (
	"os"
	"testing"

	"github.com/ferry-airgap/ferry/test/harness"
)

// TestMain removes the ferry binary the harness built, so test runs do not
// leave a build directory behind in the temporary directory, and stops the
// real Harbor and SeaweedFS if a test started them.
func TestMain(m *testing.M) {
	code := m.Run()
	harness.StopHarbor()
	harness.StopSeaweed()
	harness.RemoveFerryBuild()
	os.Exit(code)
}
