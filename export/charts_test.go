package export

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	helmchart "helm.sh/helm/v3/pkg/chart"

	"github.com/ferry-airgap/ferry/mapping"
)

func use(t *testing.T, chartName, template, image string, carry bool) chartUse {
	t.Helper()
	ref, err := name.ParseReference(image)
	if err != nil {
		t.Fatal(err)
	}
	return chartUse{chart: chartName, version: "1.0.0", template: template, image: image, ref: ref, carry: carry}
}

// TestChartImageTasksLayout: a chart's images go where the selection sends
// their repository, else under the prefix of a task reading the same
// registry, else to their own path; credentials follow the task.
func TestChartImageTasksLayout(t *testing.T) {
	auth := &mapping.Auth{Username: "u", Password: "p"}
	tasks := []*mapping.Task{{
		Name:   "core",
		Source: mapping.Endpoint{Registry: "registry.hub.docker.com", Auth: auth},
		Mappings: []*mapping.Mapping{
			{From: "spaceone/console", To: "cloudforet/spaceone/console"},
			{From: "library/redis", To: "special/redis"},
		},
	}}
	got := chartImageTasks([]chartUse{
		use(t, "spaceone", "spaceone/templates/a.yaml", "spaceone/identity:2.0", true),
		use(t, "spaceone", "spaceone/templates/b.yaml", "redis:7.2", true),
		use(t, "spaceone", "spaceone/templates/c.yaml", "quay.io/org/app@sha256:"+strings.Repeat("a", 64), true),
		use(t, "spaceone", "spaceone/templates/d.yaml", "redis:7.2", true), // same image twice: one mapping
		use(t, "spaceone", "spaceone/templates/e.yaml", "ghcr.io/not/carried:1", false),
	}, tasks)
	var lines []string
	for _, task := range got {
		for _, m := range task.Mappings {
			lines = append(lines, task.Name+" | "+task.Source.Registry+"/"+m.From+" → "+m.To+" "+strings.Join(m.Tags, ",")+strings.Join(m.Digests, ","))
		}
	}
	want := []string{
		"chart spaceone images from docker.io | docker.io/spaceone/identity → cloudforet/spaceone/identity 2.0",
		"chart spaceone images from docker.io | docker.io/library/redis → special/redis 7.2",
		"chart spaceone images from quay.io | quay.io/org/app → org/app sha256:" + strings.Repeat("a", 64),
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("tasks:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if got[0].Source.Auth != auth || got[1].Source.Auth != nil {
		t.Errorf("credentials: docker.io task has %v, quay.io task has %v", got[0].Source.Auth, got[1].Source.Auth)
	}
}

func TestWarnUncarried(t *testing.T) {
	c := &charts{uses: []chartUse{
		use(t, "web", "web/templates/deploy.yaml", "nginx:1.25", false),
		use(t, "web", "web/templates/deploy.yaml", "redis:7.2", false),
		use(t, "web", "web/templates/job.yaml", "quay.io/org/app:1", true),
	}}
	repo, _ := name.NewRepository("index.docker.io/library/nginx")
	images := []*mapping.Image{{Source: "docker.io/library/nginx:1.25", Registry: "docker.io", Repository: repo,
		Root: mapping.Manifest{Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("b", 64)}}}}
	got := c.warnUncarried(images)
	want := []string{
		"chart web 1.0.0: template web/templates/deploy.yaml uses image docker.io/library/redis:7.2, which the bundle does not carry (add it to a task, or set images: true on the chart)",
		"chart web 1.0.0: template web/templates/job.yaml uses image quay.io/org/app:1, which the bundle does not carry (it could not be resolved; see the failures)",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestRenderExcludeExtra: exclude: patterns drop rendered images (the test
// hook's busybox) before they are carried or warned about; extraImages:
// are carried even without images: true; ChartOfTask reads the relation
// back from the tasks the images are recorded under.
func TestRenderExcludeExtra(t *testing.T) {
	ch := &helmchart.Chart{Metadata: &helmchart.Metadata{APIVersion: "v2", Name: "demo", Version: "0.1.0"},
		Templates: []*helmchart.File{
			{Name: "templates/deploy.yaml", Data: []byte("kind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n        - image: nginx:1.16.0\n")},
			{Name: "templates/tests/test.yaml", Data: []byte("kind: Pod\nspec:\n  containers:\n    - image: busybox\n")},
		}}
	spec := &mapping.Chart{Name: "demo", Images: false}
	if err := spec.AddExclude(".*/busybox"); err != nil {
		t.Fatal(err)
	}
	if err := spec.AddExtraImage("quay.io/org/operand:2.1"); err != nil {
		t.Fatal(err)
	}
	c := &charts{}
	if err := c.render(spec, ch); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range c.uses {
		got = append(got, fmt.Sprintf("%s %s %v", u.template, u.image, u.carry))
	}
	want := []string{"extraImages quay.io/org/operand:2.1 true", "demo/templates/deploy.yaml nginx:1.16.0 false"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("uses:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(c.excluded) != 1 || !strings.Contains(c.excluded[0], `image busybox left out by exclude ".*/busybox"`) {
		t.Errorf("excluded: %v", c.excluded)
	}
	tasks := chartImageTasks(c.uses, nil)
	if len(tasks) != 1 || tasks[0].Name != "chart demo images from quay.io" {
		t.Fatalf("tasks: %+v", tasks)
	}
	for _, tc := range []struct {
		task, chart string
		image, ok   bool
	}{
		{tasks[0].Name, "demo", true, true},
		{"chart demo", "demo", false, true},
		{"core", "", false, false},
		{"chart ", "", false, false},
		{"chart a b", "", false, false},
	} {
		name, image, ok := ChartOfTask(tc.task)
		if name != tc.chart || image != tc.image || ok != tc.ok {
			t.Errorf("ChartOfTask(%q) = %q, %v, %v", tc.task, name, image, ok)
		}
	}
	warn := c.warnUncarried(nil)
	if len(warn) != 2 || !strings.Contains(warn[0], "extraImages: lists image quay.io/org/operand:2.1") {
		t.Errorf("warnings: %v", warn)
	}
}
