package push

// Harbor's project policies that refuse writes: a storage quota, an
// immutable tag rule, a proxy-cache project. Each stops every image of
// the run that writes into the project in the same way, so each is one
// RefusalError per project and kind, shared by the images it stopped and
// reported once, with the project, the rule and what to do.
//
// What Harbor v2.15 answers (seen with the real one):
//   quota        403 DENIED "adding 78.1 KiB of storage resource, which when updated to
//                current usage of 51.6 KiB will exceed the configured upper limit of 97.7 KiB."
//                (older Harbor: "Quota exceeded when processing the request of adding ...")
//                at blob upload end, mount into another project, and manifest PUT
//   immutable    412 PRECONDITION "Failed to process request due to 'repo:tag' configured as immutable."
//                on the manifest PUT that would move a tag
//   proxy cache  403 DENIED "denied: can not push artifact to a proxy project: P"
//                on any upload; ferry looks first (GET /api/v2.0/projects?name=P: registry_id)
//
// Endpoints used to explain a refusal, all optional (robots may not read them):
//   GET /api/v2.0/projects?name=P                           project_id, registry_id (robots may)
//   GET /api/v2.0/quotas?reference=project&reference_id=ID  quota id, hard and used storage (admins)
//   GET /api/v2.0/projects/P/immutabletagrules              the project's rules
//   GET /api/v2.0/registries/ID                             the endpoint a proxy-cache project caches

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/ferry-airgap/ferry/internal/units"
)

// Kinds of RefusalError (also the "kind" of a --json error).
const (
	RefusedQuota      = "quota"
	RefusedImmutable  = "immutable-tag"
	RefusedProxyCache = "proxy-cache"
)

// ErrRefused: a registry policy refused the write (errors.Is on a
// RefusalError); ErrQuota for a storage quota in particular.
var (
	ErrRefused = errors.New("refused by a registry policy")
	ErrQuota   = errors.New("quota exceeded")
)

// RefusalError: Harbor refused writes into one project by one of its
// policies. One value per project and kind is shared by every image it
// stopped; its message is made when it is read, after the run, so it
// names them all.
type RefusalError struct {
	Kind     string // RefusedQuota, RefusedImmutable, RefusedProxyCache
	Registry string
	Project  string
	// Quota: the project's limit and usage in bytes (from Harbor's API, or
	// read from its refusal: Approx), its quota id (0 unknown), and the
	// bytes of the project's images still missing at the end of the run.
	Limit, Used, Needed int64
	Approx              bool
	QuotaID             int64
	// Immutable tags: the tags Harbor would not move, as REPO:TAG, and the
	// project's enabled rules if ferry may read them.
	Tags  []string
	Rules []string
	// Proxy cache: the registry endpoint the project caches.
	Upstream string
	// Images it stopped (REPOSITORY:TAGS), filled in when the run ends.
	Images []string
	Err    error // the registry's answer, if it came at push time

	mu sync.Mutex
}

func (e *RefusalError) Error() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var s string
	switch e.Kind {
	case RefusedQuota:
		s = fmt.Sprintf("storage quota of project %q on %s exceeded", e.Project, e.Registry) + e.quotaDetail()
	case RefusedImmutable:
		s = fmt.Sprintf("Harbor project %q on %s refuses to move tags an immutable tag rule protects: %s", e.Project, e.Registry, strings.Join(e.Tags, ", "))
		switch len(e.Rules) {
		case 0:
			s += " (rule: one of the project's immutable tag rules, which this account may not read)"
		case 1:
			s += " (rule: " + e.Rules[0] + ")"
		default:
			s += " (rules: " + strings.Join(e.Rules, "; ") + ")"
		}
	case RefusedProxyCache:
		s = fmt.Sprintf("Harbor project %q on %s is a proxy-cache project", e.Project, e.Registry)
		if e.Upstream != "" {
			s += " (it caches " + e.Upstream + ")"
		}
		s += " and takes no pushes; nothing was uploaded to it"
	}
	if n := len(e.Images); n > 0 {
		shown := e.Images
		if n > 5 {
			shown = shown[:5]
		}
		s += fmt.Sprintf(": %s not pushed (%s", plural(n, "image"), strings.Join(shown, ", "))
		if n > 5 {
			s += fmt.Sprintf(" and %d more", n-5)
		}
		s += ")"
	}
	return s
}

func (e *RefusalError) quotaDetail() string {
	var s string
	if e.Needed > 0 {
		s = fmt.Sprintf("; %d more bytes (%s) are needed for the images of this project", e.Needed, units.Bytes(e.Needed))
	}
	if e.Limit > 0 {
		about := ""
		if e.Approx {
			about = "about "
		}
		left := max(e.Limit-e.Used, 0)
		s += fmt.Sprintf("; its quota is %s%s with %s used (%s left)", about, units.Bytes(e.Limit), units.Bytes(e.Used), units.Bytes(left))
		if e.Needed > left {
			s += fmt.Sprintf(": raise it by at least %s%s", about, units.Bytes(e.Needed-left))
		}
	}
	return s
}

// Hint says what to do about the refusal.
func (e *RefusalError) Hint() string {
	switch e.Kind {
	case RefusedQuota:
		how := "Harbor UI: Administration → Project Quotas"
		if e.QuotaID > 0 {
			how += fmt.Sprintf(`, or as admin: PUT /api/v2.0/quotas/%d {"hard":{"storage":BYTES}}`, e.QuotaID)
		}
		return "raise the storage quota of project " + e.Project + " (" + how + ") or delete artifacts there, then import again: what landed is kept and is not uploaded again"
	case RefusedImmutable:
		return "immutable tags never move: give the new image another tag upstream, or have a project admin exclude these tags from the rule (Harbor UI: Projects → " + e.Project + " → Policy → Tag Immutability) and import again; the images whose tags did not move have landed"
	case RefusedProxyCache:
		return "import into a normal project (--to " + e.Registry + "/OTHER_PROJECT); a proxy-cache project only fills itself from its upstream"
	}
	return ""
}

func (e *RefusalError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrRefused) true, and ErrQuota for a quota.
func (e *RefusalError) Is(target error) bool {
	return target == ErrRefused || target == ErrQuota && e.Kind == RefusedQuota
}

// refusalKind says which policy a registry's error answer is, or "".
func refusalKind(err error) string {
	var he *httpError
	if !errors.As(err, &he) {
		return ""
	}
	low := strings.ToLower(he.body)
	switch {
	case he.status == http.StatusForbidden && strings.Contains(low, "proxy project"):
		return RefusedProxyCache
	case he.status == http.StatusForbidden && (strings.Contains(low, "quota") || strings.Contains(low, "exceed the configured upper limit")):
		return RefusedQuota
	case he.status == http.StatusPreconditionFailed && strings.Contains(low, "immutable"):
		return RefusedImmutable
	}
	return ""
}

// isRefusal: err is a registry's refusal by a project policy.
func isRefusal(err error) bool { return refusalKind(err) != "" }

// refusalErr returns the one RefusalError of err's kind for project proj
// (err unchanged if it is no refusal). A manifest's quota refusal passes
// the manifest's size: the project needs at least that much more. An
// immutable-tag refusal passes the tag, as REPO:TAG.
func (p *pusher) refusalErr(proj string, err error, manifestSize int64, tag string) error {
	kind := refusalKind(err)
	if kind == "" {
		return err
	}
	r := p.refusalFor(kind, proj, err)
	r.mu.Lock()
	defer r.mu.Unlock()
	if kind == RefusedQuota && manifestSize > 0 && r.Needed == 0 {
		r.Needed = manifestSize
	}
	if tag != "" {
		r.Tags = append(r.Tags, tag)
	}
	return r
}

type refusalKey struct{ kind, project string }

func (p *pusher) refusalFor(kind, proj string, err error) *RefusalError {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.refusals == nil {
		p.refusals = map[refusalKey]*RefusalError{}
	}
	k := refusalKey{kind, proj}
	r, ok := p.refusals[k]
	if !ok {
		r = &RefusalError{Kind: kind, Registry: p.tgt.Registry, Project: proj, Err: err}
		p.refusals[k] = r
	}
	return r
}

// harborProject is what GET /api/v2.0/projects?name=P says of P.
type harborProject struct {
	ID         int64  `json:"project_id"`
	Name       string `json:"name"`
	RegistryID int64  `json:"registry_id"`
}

// project looks proj up in Harbor's project list, which robot accounts
// may read too; ok is false when Harbor does not show it.
//
// Shortcut: one page. name= matches part of a name, so the exact project
// is trusted to be among the first 100 projects whose name contains it.
// Where it is not (or Harbor hides it), ok is false and the callers lose
// only their explanation: a proxy-cache project is then recognised by the
// push's 403 (TestHarborProxyCacheHiddenFromAPI), a quota by Harbor's
// message (TestQuotaFromHarborMessage).
func (h *harborAPI) project(ctx context.Context, proj string) (harborProject, bool) {
	q := url.Values{"name": {proj}, "page_size": {"100"}}
	code, body, err := h.call(ctx, http.MethodGet, "/api/v2.0/projects?"+q.Encode(), nil, true)
	if err != nil || code != http.StatusOK {
		return harborProject{}, false
	}
	var list []harborProject
	if json.Unmarshal(body, &list) != nil {
		return harborProject{}, false
	}
	for _, hp := range list { // name= matches part of a name: keep the exact one
		if hp.Name == proj {
			return hp, true
		}
	}
	return harborProject{}, false
}

// checkProxyCache fails, before anything is uploaded, the images of every
// project Harbor says is a proxy cache (registry_id set): Harbor refuses
// every push there. A project Harbor does not show is left to the push,
// whose 403 is recognised too.
func (p *pusher) checkProxyCache(ctx context.Context) error {
	if p.harbor == nil {
		return nil
	}
	for _, proj := range p.projects() {
		if p.newProjects[proj] {
			continue // a dry run would create it: a normal project
		}
		hp, ok := p.harbor.project(ctx, proj)
		if !ok || hp.RegistryID == 0 {
			continue
		}
		r := p.refusalFor(RefusedProxyCache, proj, nil)
		r.Upstream = p.harbor.registryName(ctx, hp.RegistryID)
		p.failProject(proj, r)
	}
	return ctx.Err()
}

// registryName describes Harbor's registry endpoint id ("name (URL)"), or
// by its id when this account may not read it.
func (h *harborAPI) registryName(ctx context.Context, id int64) string {
	code, body, err := h.call(ctx, http.MethodGet, fmt.Sprintf("/api/v2.0/registries/%d", id), nil, true)
	var reg struct {
		Name string `json:"name"`
		URL  string `json:"url"`
	}
	if err != nil || code != http.StatusOK || json.Unmarshal(body, &reg) != nil || reg.Name == "" {
		return fmt.Sprintf("Harbor registry endpoint %d", id)
	}
	return fmt.Sprintf("registry endpoint %q, %s", reg.Name, reg.URL)
}

// explainRefusals completes each refusal once every task is done: the
// bytes an over-quota project still lacks, its quota and usage, the
// immutable rules, and the images each one stopped.
func (p *pusher) explainRefusals(ctx context.Context) {
	for _, r := range p.refusals {
		switch r.Kind {
		case RefusedQuota:
			need := p.stillNeeded(r.Project)
			r.mu.Lock()
			r.Needed += need
			r.mu.Unlock()
			p.explainQuota(ctx, r)
		case RefusedImmutable:
			if p.harbor != nil {
				rules := p.harbor.immutableRules(ctx, r.Project)
				r.mu.Lock()
				r.Rules = rules
				r.mu.Unlock()
			}
		}
		var images []string
		for _, im := range p.images {
			var got *RefusalError
			if im.err != nil && errors.As(im.err, &got) && got == r {
				images = append(images, im.ref())
			}
		}
		sort.Strings(images)
		r.mu.Lock()
		sort.Strings(r.Tags)
		r.Images = images
		r.mu.Unlock()
	}
}

// explainQuota fills in the quota's limit and usage: from Harbor's API
// where this account may read it, else from Harbor's refusal message.
func (p *pusher) explainQuota(ctx context.Context, r *RefusalError) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p.harbor != nil {
		if hp, ok := p.harbor.project(ctx, r.Project); ok {
			if id, hard, used, ok := p.harbor.quota(ctx, hp.ID); ok && hard > 0 {
				r.QuotaID, r.Limit, r.Used = id, hard, used
				return
			}
		}
	}
	var he *httpError
	if errors.As(r.Err, &he) {
		if m := quotaMessage.FindStringSubmatch(he.body); m != nil {
			used, uerr := parseHarborSize(m[1])
			limit, lerr := parseHarborSize(m[2])
			if uerr == nil && lerr == nil {
				r.Limit, r.Used, r.Approx = limit, used, true
			}
		}
	}
}

// quotaMessage reads usage and limit out of Harbor's quota refusal.
var quotaMessage = regexp.MustCompile(`current usage of ([0-9.]+ ?[A-Za-z]*) will exceed the configured upper limit of ([0-9.]+ ?[A-Za-z]*)`)

func parseHarborSize(s string) (int64, error) {
	if strings.TrimSpace(strings.TrimRight(s, "B ")) == "0" {
		return 0, nil
	}
	return units.ParseBytes(s)
}

// quota returns the storage quota of Harbor project id (admins only).
func (h *harborAPI) quota(ctx context.Context, projectID int64) (id, hard, used int64, ok bool) {
	q := url.Values{"reference": {"project"}, "reference_id": {fmt.Sprint(projectID)}}
	code, body, err := h.call(ctx, http.MethodGet, "/api/v2.0/quotas?"+q.Encode(), nil, true)
	if err != nil || code != http.StatusOK {
		return 0, 0, 0, false
	}
	var list []struct {
		ID   int64            `json:"id"`
		Hard map[string]int64 `json:"hard"`
		Used map[string]int64 `json:"used"`
	}
	if json.Unmarshal(body, &list) != nil || len(list) != 1 {
		return 0, 0, 0, false
	}
	return list[0].ID, list[0].Hard["storage"], list[0].Used["storage"], true
}

// immutableRules describes the project's enabled immutable tag rules, or
// nil when this account may not read them.
func (h *harborAPI) immutableRules(ctx context.Context, proj string) []string {
	code, body, err := h.call(ctx, http.MethodGet, "/api/v2.0/projects/"+url.PathEscape(proj)+"/immutabletagrules", nil, true)
	if err != nil || code != http.StatusOK {
		return nil
	}
	type selector struct {
		Decoration string `json:"decoration"`
		Pattern    string `json:"pattern"`
	}
	var rules []struct {
		ID             int64                 `json:"id"`
		Disabled       bool                  `json:"disabled"`
		TagSelectors   []selector            `json:"tag_selectors"`
		ScopeSelectors map[string][]selector `json:"scope_selectors"`
	}
	if json.Unmarshal(body, &rules) != nil {
		return nil
	}
	words := map[string]string{"matches": "matching", "excludes": "not matching", "repoMatches": "matching", "repoExcludes": "not matching"}
	say := func(what string, sel []selector) string {
		var parts []string
		for _, s := range sel {
			parts = append(parts, fmt.Sprintf("%s %s %q", what, words[s.Decoration], s.Pattern))
		}
		return strings.Join(parts, " and ")
	}
	var out []string
	for _, r := range rules {
		if r.Disabled {
			continue
		}
		out = append(out, fmt.Sprintf("immutable tag rule %d: %s in %s", r.ID, say("tags", r.TagSelectors), say("repositories", r.ScopeSelectors["repository"])))
	}
	return out
}

// Refusal is one Harbor policy refusal in the summary, once however many
// images it stopped.
type Refusal struct {
	Kind    string   `json:"kind"` // RefusedQuota, RefusedImmutable, RefusedProxyCache
	Project string   `json:"project"`
	Message string   `json:"message"`
	Hint    string   `json:"hint"`
	Images  []string `json:"images"`
	Tags    []string `json:"tags,omitempty"` // immutable: the tags refused (REPO:TAG)
}

// summarizeRefusals lists the refusals once each and marks the failures
// they caused.
func (p *pusher) summarizeRefusals() {
	s := p.sum
	for i := range s.Failures {
		for _, im := range p.images {
			var r *RefusalError
			if im.ref() == s.Failures[i].Image && im.err != nil && errors.As(im.err, &r) {
				s.Failures[i].Refusal = r.Kind
			}
		}
	}
	for _, r := range p.refusals {
		if len(r.Images) == 0 {
			continue
		}
		s.refusalErrs = append(s.refusalErrs, r)
	}
	sort.Slice(s.refusalErrs, func(i, j int) bool {
		a, b := s.refusalErrs[i], s.refusalErrs[j]
		return a.Project < b.Project || a.Project == b.Project && a.Kind < b.Kind
	})
	for _, r := range s.refusalErrs {
		s.Refusals = append(s.Refusals, Refusal{Kind: r.Kind, Project: r.Project, Message: r.Error(), Hint: r.Hint(),
			Images: r.Images, Tags: r.Tags})
	}
}

// refusalFailure is the run's error when one refusal stopped every image
// that failed: that refusal, said once.
func (p *pusher) refusalFailure() error {
	if len(p.sum.Refusals) != 1 || len(p.sum.Refusals[0].Images) != p.sum.Failed {
		return nil
	}
	r := p.refusals[refusalKey{p.sum.Refusals[0].Kind, p.sum.Refusals[0].Project}]
	rest := ""
	if n := len(p.images) - p.sum.Failed; n > 0 && !p.o.DryRun {
		rest = fmt.Sprintf("; the other %s", plural(n, "image")) + map[bool]string{true: " is", false: " are"}[n == 1] + " complete"
	}
	return &runRefusal{r: r, rest: rest, dryRun: p.o.DryRun}
}

// runRefusal is a run stopped by one refusal: ErrFailed and the refusal.
type runRefusal struct {
	r      *RefusalError
	rest   string
	dryRun bool
}

func (e *runRefusal) Error() string {
	head := ErrFailed.Error()
	if e.dryRun {
		head = "import would fail"
	}
	return head + ": " + e.r.Error() + e.rest
}

func (e *runRefusal) Unwrap() []error { return []error{ErrFailed, e.r} }

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
