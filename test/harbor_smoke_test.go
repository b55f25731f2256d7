package test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/ferry-airgap/ferry/test/harness"
)

// TestHarborHarness checks the real Harbor the Harbor tests run against:
// v2.15.2, admin logs in, a project and a project robot can be made.
func TestHarborHarness(t *testing.T) {
	h := harness.StartHarbor(t)
	var info struct {
		Version string `json:"harbor_version"`
	}
	h.MustAPI(t, http.MethodGet, "/systeminfo", nil, &info, http.StatusOK)
	if !strings.HasPrefix(info.Version, "v2.15.2") {
		t.Fatalf("Harbor version %q, want v2.15.2", info.Version)
	}
	proj := h.NewProject(t, "smoke")
	user, secret := h.NewRobot(t, proj, "importer", harness.PushPull)
	if want := "robot$" + proj + "+importer"; user != want {
		t.Fatalf("robot name %q, want %q", user, want)
	}
	if code, body := h.APIAs(t, user, secret, http.MethodGet, "/projects?name="+proj, nil); code != http.StatusOK {
		t.Fatalf("robot cannot list its project: %d %s", code, body)
	}
}
