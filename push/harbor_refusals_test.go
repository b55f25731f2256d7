package push

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

// The bodies are what the real Harbor v2.15.2 answered (test/harbor_refusals_test.go
// drives it); the older quota wording is Harbor 2.0-2.x's.
func TestRefusalKind(t *testing.T) {
	for _, c := range []struct {
		status int
		body   string
		want   string
	}{
		{403, `{"errors":[{"code":"DENIED","message":"adding 78.1 KiB of storage resource, which when updated to current usage of 51.6 KiB will exceed the configured upper limit of 97.7 KiB."}]}`, RefusedQuota},
		{403, `{"errors":[{"code":"DENIED","message":"Quota exceeded when processing the request of adding 10 B of storage resource"}]}`, RefusedQuota},
		{412, `{"errors":[{"code":"PRECONDITION","message":"Failed to process request due to 'a:v1' configured as immutable."}]}`, RefusedImmutable},
		{403, `{"errors":[{"code":"DENIED","message":"denied: can not push artifact to a proxy project: px1"}]}`, RefusedProxyCache},
		{403, `{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}`, ""},
		{412, `{"errors":[{"code":"PRECONDITION","message":"something else"}]}`, ""},
		{401, `{"errors":[{"code":"UNAUTHORIZED","message":"quota"}]}`, ""},
	} {
		err := &httpError{status: c.status, body: c.body, err: errors.New(http.StatusText(c.status))}
		if got := refusalKind(err); got != c.want {
			t.Errorf("%d %s: kind %q, want %q", c.status, c.body, got, c.want)
		}
	}
}

func TestQuotaFromHarborMessage(t *testing.T) {
	p := &pusher{o: &Options{}, tgt: Target{Registry: "harbor.test"}}
	body := `{"errors":[{"code":"DENIED","message":"adding 78.1 KiB of storage resource, which when updated to current usage of 51.6 KiB will exceed the configured upper limit of 97.7 KiB."}]}`
	err := p.refusalErr("proj", &httpError{status: 403, body: body, err: errors.New("403")}, 0, "")
	r, ok := err.(*RefusalError)
	if !ok || r.Kind != RefusedQuota || !errors.Is(err, ErrQuota) || !errors.Is(err, ErrRefused) {
		t.Fatalf("refusalErr = %#v", err)
	}
	if again := p.refusalErr("proj", &httpError{status: 403, body: body, err: errors.New("403")}, 0, ""); again != err {
		t.Error("a second refusal of the same project is a second error")
	}
	r.Needed = 200 << 10
	p.explainQuota(t.Context(), r) // no Harbor API: read from the message
	msg := r.Error()
	for _, want := range []string{`storage quota of project "proj" on harbor.test exceeded`, "204800 more bytes (200.0 KiB)",
		"its quota is about 97.7 KiB with 51.6 KiB used (46.1 KiB left)", "raise it by at least about 153.9 KiB"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q:\n%s", want, msg)
		}
	}
	if !strings.Contains(r.Hint(), "Project Quotas") {
		t.Errorf("hint: %s", r.Hint())
	}
}

func TestParseHarborSize(t *testing.T) {
	for in, want := range map[string]int64{"0 B": 0, "512 B": 512, "1.5 KiB": 1536, "97.7 KiB": 100044, "2.0 GiB": 2 << 30} {
		got, err := parseHarborSize(in)
		if err != nil || got != want {
			t.Errorf("parseHarborSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}
