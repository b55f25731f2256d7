package push

// Harbor specifics. Harbor (goharbor.io) puts a project in front of every
// repository: the first path segment. Pushing into a missing project answers
// a bare 401, and Harbor's token service hands out rightless tokens for bad
// credentials, so a plain registry client learns of both problems late and
// badly. This file detects Harbor, checks credentials through its API,
// checks (and with --create-projects creates) projects before any upload.
//
// Endpoints used (Harbor API v2.0):
//   GET  /api/v2.0/systeminfo          detection (public)
//   GET  /api/v2.0/ping                detection fallback ("Pong")
//   GET  /api/v2.0/users/current       401 = bad credentials (robots get 403: fine)
//   HEAD /api/v2.0/projects?project_name=X   200 exists, 404 missing
//   POST /api/v2.0/projects            {"project_name":"x","metadata":{"public":"false"}}
//                                      201 created, 409 exists

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/ferry-airgap/ferry/internal/registry"
)

// ErrProjectMissing: a Harbor project does not exist.
var ErrProjectMissing = errors.New("harbor project does not exist")

// HarborProjectError reports missing Harbor projects with the fix.
type HarborProjectError struct {
	Registry string
	Project  string
	More     []string // further missing projects, if any
	Err      error    // the registry's answer, if the problem showed at push time
}

func (e *HarborProjectError) Error() string {
	if len(e.More) == 0 {
		return fmt.Sprintf("Harbor project %s does not exist on %s; create it in the Harbor UI or rerun with --create-projects", e.Project, e.Registry)
	}
	return fmt.Sprintf("Harbor projects %s do not exist on %s; create them in the Harbor UI or rerun with --create-projects",
		strings.Join(append([]string{e.Project}, e.More...), ", "), e.Registry)
}

// Unwrap returns ErrProjectMissing and the registry's error.
func (e *HarborProjectError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrProjectMissing}
	}
	return []error{ErrProjectMissing, e.Err}
}

// projectName is Harbor's rule for project names.
var projectName = regexp.MustCompile(`^[a-z0-9]+(?:[._-][a-z0-9]+)*$`)

type harborAPI struct {
	base     string // scheme://host
	host     string
	hc       *http.Client
	user     string
	password string
	basic    bool
	created  []string
}

// detectHarbor returns a Harbor API client when host answers Harbor's
// systeminfo or ping endpoints, else nil.
func detectHarbor(ctx context.Context, p *pusher) *harborAPI {
	h := &harborAPI{base: p.scheme + "://" + p.tgt.Registry, host: p.tgt.Registry, hc: &http.Client{Transport: p.o.Client.Transport()}}
	if a := p.host.Auth(); a != authn.Anonymous {
		if cfg, err := a.Authorization(); err == nil && cfg.Username != "" && cfg.Password != "" {
			h.user, h.password, h.basic = cfg.Username, cfg.Password, true
		}
	}
	if code, body, err := h.call(ctx, http.MethodGet, "/api/v2.0/systeminfo", nil, false); err == nil && code == http.StatusOK {
		var v map[string]any
		if json.Unmarshal(body, &v) == nil {
			return h
		}
	}
	if code, body, err := h.call(ctx, http.MethodGet, "/api/v2.0/ping", nil, false); err == nil && code == http.StatusOK &&
		strings.Contains(strings.ToLower(string(body)), "pong") {
		return h
	}
	return nil
}

// call sends one API request and returns status and (capped) body.
func (h *harborAPI) call(ctx context.Context, method, path string, body []byte, auth bool) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth && h.basic {
		req.SetBasicAuth(h.user, h.password)
	}
	resp, err := h.hc.Do(req)
	if err != nil {
		return 0, nil, registry.Explain(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, registry.MaxErrorBody))
	return resp.StatusCode, b, nil
}

// checkCredentials catches a wrong password that Harbor's token service
// would let through as anonymous: /users/current answers 401 to it.
func (h *harborAPI) checkCredentials(ctx context.Context) error {
	if !h.basic {
		return nil
	}
	code, body, err := h.call(ctx, http.MethodGet, "/api/v2.0/users/current", nil, true)
	if err != nil {
		return err
	}
	if code == http.StatusUnauthorized {
		return &registry.AuthError{Registry: h.host, User: h.user, Status: code, Detail: "Harbor API /api/v2.0/users/current: " + harborMessage(body)}
	}
	return nil // 200 for users, 403 for robot accounts: both authenticated
}

// projectExists: true/false, or an error when Harbor will not say (e.g. 401/403).
func (h *harborAPI) projectExists(ctx context.Context, proj string) (bool, error) {
	code, body, err := h.call(ctx, http.MethodHead, "/api/v2.0/projects?project_name="+url.QueryEscape(proj), nil, true)
	if err != nil {
		return false, err
	}
	switch code {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	}
	return false, fmt.Errorf("harbor %s: HEAD /api/v2.0/projects?project_name=%s: %d %s %s", h.host, proj, code, http.StatusText(code), harborMessage(body))
}

func (h *harborAPI) createProject(ctx context.Context, proj string, public bool) error {
	body, _ := json.Marshal(map[string]any{
		"project_name": proj,
		"metadata":     map[string]string{"public": fmt.Sprint(public)},
	})
	code, resp, err := h.call(ctx, http.MethodPost, "/api/v2.0/projects", body, true)
	if err != nil {
		return err
	}
	switch code {
	case http.StatusCreated:
		h.created = append(h.created, proj)
		return nil
	case http.StatusConflict:
		return nil // created meanwhile
	case http.StatusUnauthorized, http.StatusForbidden:
		return fmt.Errorf("harbor %s: creating project %s: %d %s (%s); hint: project creation may be restricted to administrators, and project-level robot accounts cannot create projects: create it in the Harbor UI",
			h.host, proj, code, http.StatusText(code), harborMessage(resp))
	}
	return fmt.Errorf("harbor %s: creating project %s: %d %s (%s)", h.host, proj, code, http.StatusText(code), harborMessage(resp))
}

// harborMessage extracts Harbor's {"errors":[{"code","message"}]}.
func harborMessage(body []byte) string {
	var e struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &e) == nil && len(e.Errors) > 0 {
		msg := e.Errors[0].Message
		// Harbor often repeats its message: "X: X".
		if half := (len(msg) - 2) / 2; len(msg) > 2 && len(msg)%2 == 0 && msg[half:half+2] == ": " && msg[:half] == msg[half+2:] {
			msg = msg[:half]
		}
		return e.Errors[0].Code + ": " + msg
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// harborProjects checks every project before any upload; missing ones are
// created with --create-projects, else the run stops with one error that
// names them and the fix. In a dry run nothing is created. The tokens issued so far (connect's
// check) carry no rights on projects created here, Harbor's token service
// grants rights only on projects that exist when it issues a token: they
// are renewed before the next request.
func (p *pusher) harborProjects(ctx context.Context) error {
	if p.harbor == nil {
		return nil
	}
	renew := false // a project was created (by us or, 409, meanwhile by another)
	var missing []string
	defer func() {
		if renew {
			p.host.Renew()
		}
	}()
	for _, proj := range p.projects() {
		if !projectName.MatchString(proj) {
			p.failProject(proj, fmt.Errorf("%q is not a valid Harbor project name (lower-case letters, digits and . _ - between them): choose another --to prefix", proj))
			continue
		}
		ok, err := p.harbor.projectExists(ctx, proj)
		if err != nil {
			// Harbor would not tell (anonymous, robot): push and let the
			// registry answer; a missing project is recognised then.
			p.o.Logger.Warn("cannot check Harbor project", "project", proj, "error", err.Error())
			continue
		}
		if ok {
			continue
		}
		switch {
		case !p.o.CreateProjects:
			missing = append(missing, proj)
		case p.o.DryRun:
			p.newProjects[proj] = true
			p.sum.Warnings = append(p.sum.Warnings, fmt.Sprintf("Harbor project %s does not exist on %s; it would be created (%s)", proj, p.tgt.Registry, visibility(p.o.Public)))
		case p.o.CreateProjects:
			if err := p.harbor.createProject(ctx, proj, p.o.Public); err != nil {
				return err
			}
			renew = true
		}
	}
	if len(missing) > 0 {
		// One error for the run, before anything moves: the fix is one
		// flag or one click per project, not something per image.
		return &HarborProjectError{Registry: p.tgt.Registry, Project: missing[0], More: missing[1:]}
	}
	return nil
}

func visibility(public bool) string {
	if public {
		return "public"
	}
	return "private"
}

func (p *pusher) failProject(proj string, err error) {
	for _, im := range p.live() {
		if project(im.repo) == proj {
			im.fail("", err)
		}
	}
}

// missingProjects returns one error for the projects that the survey
// found missing (Harbor's 401 "project X not found", when its API would
// not say beforehand), so that the run stops before any upload with one
// message instead of one per image.
func (p *pusher) missingProjects(context.Context) error {
	var first *HarborProjectError
	seen := map[string]bool{}
	for _, im := range p.images {
		var pe *HarborProjectError
		if im.err == nil || !errors.As(im.err, &pe) || seen[pe.Project] {
			continue
		}
		seen[pe.Project] = true
		if first == nil {
			c := *pe
			first = &c
		} else {
			first.More = append(first.More, pe.Project)
		}
	}
	if first == nil {
		return nil
	}
	return first
}

// PushDeniedError: the account authenticated but may not push into a
// repository (a Harbor robot or user without push permission on the
// project).
type PushDeniedError struct {
	Registry string
	Repo     string // the repository the check tried
	Who      string // the account, as Host.Who says it
	Harbor   bool
	Err      error // the registry's answer
}

// ErrPushDenied: the account may not push (see PushDeniedError).
var ErrPushDenied = errors.New("push not allowed")

func (e *PushDeniedError) Error() string {
	why := ""
	var he *httpError
	if errors.As(e.Err, &he) {
		why = fmt.Sprintf(" (%d %s: %s)", he.status, http.StatusText(he.status), harborMessage([]byte(he.body)))
	}
	if e.Harbor {
		return fmt.Sprintf("%s may not push to Harbor project %s on %s%s: give the account push access to the project "+
			"(a robot account needs the repository push and pull permissions; a user the Developer role or above), then import again",
			e.Who, project(e.Repo), e.Registry, why)
	}
	return fmt.Sprintf("%s may not push to %s/%s%s: give the account push access, then import again", e.Who, e.Registry, e.Repo, why)
}

// Unwrap returns ErrPushDenied and the registry's answer.
func (e *PushDeniedError) Unwrap() []error { return []error{ErrPushDenied, e.Err} }

// explainRead returns Harbor's missing-project error as it is (it names
// the fix), and any other error unchanged.
func (p *pusher) explainRead(_ string, err error) error {
	var pe *HarborProjectError
	if errors.As(err, &pe) {
		return pe
	}
	return err
}
