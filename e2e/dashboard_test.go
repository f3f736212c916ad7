package e2e

// The Grafana dashboard and the Prometheus alert rules under deploy/
// (deploy/README.md, "Dashboard and alerts"): every metric they query is one
// the real binary exports, in embedded and in cluster mode; the dashboard
// imports as it is; promtool accepts the rules and passes their unit tests.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"

	"gopkg.in/yaml.v3"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil/redistest"
)

const (
	dashboardFile  = "../deploy/grafana/presence-sidecar.json"
	alertsFile     = "../deploy/prometheus/alerts.yaml"
	alertsTestFile = "../deploy/prometheus/alerts_test.yaml"
	// runbookBase is where runbook_url links point: the repository's files.
	runbookBase = "https://github.com/presence-sidecar/presence-sidecar/blob/main/"
)

// metricRef finds the sidecar's metric names in PromQL.
var metricRef = regexp.MustCompile(`presence_sidecar_[a-z0-9_]+`)

type dashboardPanel struct {
	ID         int                      `json:"id"`
	Type       string                   `json:"type"`
	Title      string                   `json:"title"`
	Datasource map[string]any           `json:"datasource"`
	GridPos    struct{ X, Y, W, H int } `json:"gridPos"`
	Targets    []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource map[string]any `json:"datasource"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"` // a collapsed row's
}

type dashboard struct {
	UID           string           `json:"uid"`
	Title         string           `json:"title"`
	SchemaVersion int              `json:"schemaVersion"`
	Inputs        json.RawMessage  `json:"__inputs"`
	Panels        []dashboardPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string         `json:"name"`
			Type       string         `json:"type"`
			Query      any            `json:"query"` // a string, or {query: …} for a Prometheus query variable
			Definition string         `json:"definition"`
			Datasource map[string]any `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// allPanels flattens rows, collapsed or not.
func (d dashboard) allPanels() []dashboardPanel {
	var out []dashboardPanel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

// queries are the dashboard's PromQL by where it is used: panel targets and
// the query variables' label_values().
func (d dashboard) queries() map[string]string {
	out := map[string]string{}
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			out[fmt.Sprintf("panel %d %q target %s", p.ID, p.Title, tg.RefID)] = tg.Expr
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q := v.Definition
		if m, ok := v.Query.(map[string]any); ok {
			q += " " + fmt.Sprint(m["query"])
		} else if s, ok := v.Query.(string); ok {
			q += " " + s
		}
		out["variable "+v.Name] = q
	}
	return out
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T) ruleFile {
	t.Helper()
	raw, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var f ruleFile
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	if len(f.Groups) == 0 {
		t.Fatalf("%s: no rule groups", alertsFile)
	}
	return f
}

// exported lists the metric names in a /metrics scrape: every sample's
// name, and a histogram's _bucket, _sum and _count from its TYPE line.
func exported(t *testing.T, sc *sidecar) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, line := range metricLines(t, sc) {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			if name, typ, _ := strings.Cut(rest, " "); typ == "histogram" {
				for _, sfx := range []string{"_bucket", "_sum", "_count"} {
					out[name+sfx] = true
				}
			}
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			out[line[:i]] = true
		}
	}
	return out
}

// The dashboard's and the rules' metric names, each against a real scrape:
// an embedded-mode sidecar and a cluster-mode one, each having connected a
// session, handed it over, lost it and delivered its /expire, so that the
// instruments recorded only on a delivery or a decision have samples too.
func TestDashboardAndAlertMetricsExported(t *testing.T) {
	used := map[string][]string{} // name -> where
	for where, q := range readDashboard(t).queries() {
		for _, n := range metricRef.FindAllString(q, -1) {
			used[n] = append(used[n], "dashboard "+where)
		}
	}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			for _, n := range metricRef.FindAllString(r.Expr, -1) {
				used[n] = append(used[n], "alert "+r.Alert)
			}
		}
	}
	if len(used) == 0 {
		t.Fatal("no presence_sidecar_ metric found in the dashboard or the rules")
	}

	up, pf := newUpstream(t), newPlatform(t)
	embedded := start(t, baseEnv(up.url(), pf.url(), t.TempDir()))
	rs := redistest.Start(t)
	cup, cpf := newUpstream(t), newPlatform(t)
	clustered := start(t, clusterEnv(cup.url(), cpf.url(), "redis://"+rs.Addr)) // HANDOFF_DETECT=always

	c := client(t, embedded, "dash-e", "bot-1")
	<-up.links
	cc := client(t, clustered, "dash-c", "bot-1")
	<-cup.links
	if code, body := embedded.api("PUT", "/v1/sessions/dash-e/handoff", nil); code != 200 {
		t.Fatalf("PUT handoff: %d %s", code, body)
	}
	closeClean(c)
	closeClean(cc)
	for _, p := range []*platform{pf, cpf} {
		if h := p.accepted(t, 10*time.Second); h.Path != "/expire" {
			t.Fatalf("got %s, want the /expire", h.Path)
		}
	}

	// The outcome is recorded once the platform's answer is read: poll.
	var missing []string
	deadline := time.Now().Add(5 * time.Second)
	for {
		names := exported(t, embedded)
		for n := range exported(t, clustered) {
			names[n] = true
		}
		missing = missing[:0]
		for n := range used {
			if !names[n] {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	slices.Sort(missing)
	for _, n := range missing {
		where := used[n]
		slices.Sort(where)
		t.Errorf("%s is not exported by the sidecar (embedded or cluster mode); used by %s", n, strings.Join(slices.Compact(where), "; "))
	}
	t.Logf("%d metric names checked against the scrapes", len(used))
}

// The dashboard imports as it is: no __inputs to fill, one data source
// variable every query goes through, panels that fit the 24-column grid.
func TestDashboardImportable(t *testing.T) {
	d := readDashboard(t)
	if len(d.Inputs) > 0 {
		t.Error("the dashboard has __inputs: it would need the export-for-sharing import flow")
	}
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 36 {
		t.Errorf("uid %q, title %q, schemaVersion %d: want both set and a schema of Grafana 10 or later", d.UID, d.Title, d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if v.Type == "datasource" && v.Query != "prometheus" {
			t.Errorf("variable %s: query %v, want prometheus", v.Name, v.Query)
		}
		if v.Type == "query" && fmt.Sprint(v.Datasource["uid"]) != "${datasource}" {
			t.Errorf("variable %s: data source %v, want ${datasource}", v.Name, v.Datasource)
		}
	}
	if vars["datasource"] != "datasource" || vars["job"] != "query" || vars["instance"] != "query" {
		t.Errorf("variables %v: want datasource (a data source variable), job and instance", vars)
	}
	ids := map[int]bool{}
	for _, p := range d.allPanels() {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %d %q: gridPos %+v does not fit 24 columns", p.ID, p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %d %q has no query", p.ID, p.Title)
		}
		if fmt.Sprint(p.Datasource["uid"]) != "${datasource}" {
			t.Errorf("panel %d %q: data source %v, want ${datasource}", p.ID, p.Title, p.Datasource)
		}
		for _, tg := range p.Targets {
			if fmt.Sprint(tg.Datasource["uid"]) != "${datasource}" {
				t.Errorf("panel %d %q target %s: data source %v, want ${datasource}", p.ID, p.Title, tg.RefID, tg.Datasource)
			}
			// Counters are only meaningful through rate() or increase().
			for _, n := range metricRef.FindAllString(tg.Expr, -1) {
				if (strings.HasSuffix(n, "_total") || strings.HasSuffix(n, "_bucket") || strings.HasSuffix(n, "_count")) &&
					!strings.Contains(tg.Expr, "rate(") && !strings.Contains(tg.Expr, "increase(") && !strings.Contains(p.Title, "since start") {
					t.Errorf("panel %d %q: counter %s without rate() or increase()", p.ID, p.Title, n)
				}
			}
		}
	}
}

// promtool is Debian's (package prometheus); missing, the test fails.
func promtool(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"promtool", "/usr/bin/promtool"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Fatal("promtool is not installed: apt-get install -y prometheus (scripts/test.sh does it as root)")
	return ""
}

func runPromtool(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(promtool(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// The rule file is valid, and its alerts fire on the series of
// alerts_test.yaml as that file expects, and only then.
func TestAlertRulesPromtool(t *testing.T) {
	runPromtool(t, "check", "rules", alertsFile)
	runPromtool(t, "test", "rules", alertsTestFile)
}

// Every dashboard query is valid PromQL: each, its Grafana variables given
// values, becomes a recording rule that promtool parses.
func TestDashboardQueriesParsePromtool(t *testing.T) {
	grafanaVars := strings.NewReplacer("$__rate_interval", "5m", "$__range", "1h", "$__interval", "1m", "$job", ".*", "$instance", ".*")
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	for _, p := range readDashboard(t).allPanels() {
		for _, tg := range p.Targets {
			rules = append(rules, rule{fmt.Sprintf("dashboard:panel_%d_%s", p.ID, tg.RefID), grafanaVars.Replace(tg.Expr)})
		}
	}
	raw, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dashboard-rules.yaml")
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, "check", "rules", path)
}

// Every alert says how bad it is, what happened and where to read on: a
// runbook_url to a heading that exists in the repository's Markdown.
func TestAlertRulesAnnotated(t *testing.T) {
	seen := map[string]bool{}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %s: a rule without alert (recording rules do not belong here)", g.Name)
				continue
			}
			if seen[r.Alert] {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			seen[r.Alert] = true
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("alert %s: severity %q, want warning or critical", r.Alert, s)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("alert %s: no %s annotation", r.Alert, a)
				}
			}
			rel, ok := strings.CutPrefix(r.Annotations["runbook_url"], runbookBase)
			file, anchor, hasAnchor := strings.Cut(rel, "#")
			if !ok || !hasAnchor {
				t.Errorf("alert %s: runbook_url %q, want %sFILE#heading", r.Alert, r.Annotations["runbook_url"], runbookBase)
				continue
			}
			if !slices.Contains(headingAnchors(t, filepath.Join("..", file)), anchor) {
				t.Errorf("alert %s: runbook_url's #%s is no heading of %s", r.Alert, anchor, file)
			}
		}
	}
}

// headingAnchors are the anchors a Markdown file's headings get on GitHub
// (lower case, spaces to hyphens, other punctuation dropped); code blocks'
// comment lines are not headings.
func headingAnchors(t *testing.T, path string) []string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	fenced := false
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "```") {
			fenced = !fenced
			continue
		}
		text := strings.TrimLeft(line, "#")
		if fenced || len(text) == len(line) || !strings.HasPrefix(text, " ") {
			continue
		}
		var b strings.Builder
		for _, r := range strings.ToLower(strings.TrimSpace(text)) {
			switch {
			case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
				b.WriteRune(r)
			case r == ' ':
				b.WriteByte('-')
			}
		}
		out = append(out, b.String())
	}
	return out
}
