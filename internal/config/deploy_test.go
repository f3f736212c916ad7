package config

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/presence-sidecar/presence-sidecar/internal/telemetry"
)

// The deployment examples (deploy/) and the image (Dockerfile) set the
// sidecar's environment in several places; these tests keep them in step
// with what the binary reads, and keep each example true to its state mode:
// embedded (one replica, Recreate, DATA_DIR on a volume) or cluster
// (REDIS_URL: several replicas, rolling updates, Redis for the state).

const sidecarName = "presence-sidecar" // the container / compose service (compose: also presence-sidecar-N)

// The Kubernetes examples: one kustomization per state mode.
const (
	embeddedDir = "../../deploy/kubernetes/embedded"
	clusterDir  = "../../deploy/kubernetes/cluster"
)

type setting struct{ name, value, where string }

// known reports whether the binary reads name: the Config struct, or
// telemetry (OTEL_* through the SDK, POD_NAME, POD_NAMESPACE).
func known(name string) bool {
	for _, v := range Vars() {
		if v.Name == name {
			return true
		}
	}
	return slices.Contains(telemetry.Vars(), name)
}

// dockerfileEnv returns the ENV of the Dockerfile's final stage (the one
// the binary runs in).
func dockerfileEnv(t *testing.T, path string) []setting {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []setting
	var line string
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "#") && line == "" {
			continue
		}
		if cont, ok := strings.CutSuffix(l, `\`); ok {
			line += cont + " "
			continue
		}
		line += l
		inst, rest, _ := strings.Cut(line, " ")
		line = ""
		switch strings.ToUpper(inst) {
		case "FROM":
			out = nil // an earlier stage's ENV does not reach the binary
		case "ENV":
			fields := strings.Fields(rest)
			if len(fields) > 0 && !strings.Contains(fields[0], "=") { // legacy "ENV KEY value"
				out = append(out, setting{fields[0], strings.Join(fields[1:], " "), path})
				continue
			}
			for _, f := range fields {
				k, v, _ := strings.Cut(f, "=")
				out = append(out, setting{k, strings.Trim(v, `"`), path})
			}
		}
	}
	return out
}

// decodeFile reads every document of one YAML file.
func decodeFile(path string) ([]map[string]any, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var docs []map[string]any
	dec := yaml.NewDecoder(f)
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			return docs, nil
		} else if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
}

// yamlDocs reads every document of every YAML file under dir.
func yamlDocs(t *testing.T, dir string) map[string][]map[string]any {
	t.Helper()
	docs := map[string][]map[string]any{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || (filepath.Ext(path) != ".yaml" && filepath.Ext(path) != ".yml") {
			return err
		}
		ds, err := decodeFile(path)
		if err != nil {
			return err
		}
		docs[path] = ds
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return docs
}

// kustomization reads what dir/kustomization.yaml applies: the documents
// of its resources, which must be exactly the other YAML files of dir (a
// file left out would be an example nobody applies).
func kustomization(t *testing.T, dir string) map[string][]map[string]any {
	t.Helper()
	k, err := decodeFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil || len(k) != 1 {
		t.Fatalf("%s: want one kustomization.yaml document: %v", dir, err)
	}
	docs := map[string][]map[string]any{}
	for _, r := range list(k[0]["resources"]) {
		path := filepath.Join(dir, str(r))
		ds, err := decodeFile(path)
		if err != nil {
			t.Errorf("%s/kustomization.yaml lists %s: %v", dir, str(r), err)
			continue
		}
		docs[path] = ds
	}
	all, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	for _, f := range all {
		if _, listed := docs[f]; !listed && filepath.Base(f) != "kustomization.yaml" {
			t.Errorf("%s is not in %s/kustomization.yaml", f, dir)
		}
	}
	if len(docs) == 0 {
		t.Fatalf("%s: the kustomization applies nothing", dir)
	}
	return docs
}

// kustomizations are the Kubernetes examples: every directory under
// deploy/kubernetes with a kustomization.yaml.
func kustomizations(t *testing.T) []string {
	t.Helper()
	dirs, err := filepath.Glob("../../deploy/kubernetes/*/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range dirs {
		dirs[i] = filepath.Dir(d)
	}
	for _, want := range []string{embeddedDir, clusterDir} {
		if !slices.Contains(dirs, filepath.Clean(want)) {
			t.Errorf("no kustomization in %s", want)
		}
	}
	if top := "../../deploy/kubernetes/kustomization.yaml"; fileExists(top) {
		t.Errorf("%s: each state mode has its own kustomization (embedded/, cluster/); one above them would apply both", top)
	}
	return dirs
}

func fileExists(path string) bool { _, err := os.Stat(path); return err == nil }

// get walks a decoded YAML tree: keys for maps, ints for lists.
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

func list(v any) []any { l, _ := v.([]any); return l }

// k8s is what a Kubernetes example gives the sidecar container.
type k8s struct {
	workload  map[string]any // the Deployment (or other) holding the pod
	pod       map[string]any
	container map[string]any
	// env is what the binary gets: envFrom first, then env, the order
	// Kubernetes applies them; an env entry from the downward API (no value
	// known here) is left out.
	env []setting
	// names are every variable the container is given, for the known check.
	names []setting
	// fromSecret: variables whose value comes from a Secret.
	fromSecret map[string]bool
	where      string
}

// kubernetes finds the sidecar containers in docs (one kustomization's),
// resolving envFrom and secretKeyRef / configMapKeyRef against the
// ConfigMaps and Secrets docs define.
func kubernetes(t *testing.T, docs map[string][]map[string]any) []k8s {
	t.Helper()
	sources := map[string]map[string]string{} // "ConfigMap/name" → key → value
	for _, ds := range docs {
		for _, d := range ds {
			kind, name := str(d["kind"]), str(get(d, "metadata", "name"))
			if kind != "ConfigMap" && kind != "Secret" {
				continue
			}
			for _, field := range []string{"data", "stringData"} {
				m, _ := d[field].(map[string]any)
				for k, v := range m {
					if sources[kind+"/"+name] == nil {
						sources[kind+"/"+name] = map[string]string{}
					}
					sources[kind+"/"+name][k] = str(v)
				}
			}
		}
	}
	refs := map[string]string{"ConfigMap": "configMapRef", "Secret": "secretRef"}
	keyRefs := map[string]string{"ConfigMap": "configMapKeyRef", "Secret": "secretKeyRef"}
	var out []k8s
	for path, ds := range docs {
		for _, d := range ds {
			var pod map[string]any
			switch str(d["kind"]) {
			case "Deployment", "StatefulSet", "DaemonSet", "Job":
				pod, _ = get(d, "spec", "template", "spec").(map[string]any)
			case "Pod":
				pod, _ = d["spec"].(map[string]any)
			}
			for _, c := range append(list(pod["initContainers"]), list(pod["containers"])...) {
				if str(get(c, "name")) != sidecarName {
					continue
				}
				k := k8s{workload: d, pod: pod, container: c.(map[string]any), fromSecret: map[string]bool{}, where: path}
				for _, ef := range list(get(c, "envFrom")) {
					for kind, ref := range refs {
						n := str(get(ef, ref, "name"))
						if n == "" {
							continue
						}
						s, ok := sources[kind+"/"+n]
						if !ok {
							t.Errorf("%s: envFrom names %s %q, which its kustomization does not define", path, kind, n)
						}
						for _, key := range sortedKeys(s) {
							k.env = append(k.env, setting{key, s[key], path})
							k.fromSecret[key] = kind == "Secret"
						}
					}
				}
				for _, e := range list(get(c, "env")) {
					name := str(get(e, "name"))
					k.names = append(k.names, setting{name, "", path})
					if v, ok := get(e, "value").(string); ok || get(e, "valueFrom") == nil {
						k.env = append(k.env, setting{name, v, path})
						k.fromSecret[name] = false
						continue
					}
					for kind, ref := range keyRefs {
						src, key := str(get(e, "valueFrom", ref, "name")), str(get(e, "valueFrom", ref, "key"))
						if src == "" {
							continue
						}
						v, ok := sources[kind+"/"+src][key]
						if !ok {
							t.Errorf("%s: %s comes from key %q of %s %q, which its kustomization does not define", path, name, key, kind, src)
						}
						k.env = append(k.env, setting{name, v, path})
						k.fromSecret[name] = kind == "Secret"
					}
				}
				k.names = append(k.names, k.env...)
				out = append(out, k)
			}
		}
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// composeSidecar is one sidecar service of a compose file.
type composeSidecar struct {
	name    string
	service map[string]any
	env     []setting
}

// isSidecarService: the service named presence-sidecar, or
// presence-sidecar-N for further replicas.
func isSidecarService(name string) bool {
	if name == sidecarName {
		return true
	}
	n, ok := strings.CutPrefix(name, sidecarName+"-")
	_, err := strconv.Atoi(n)
	return ok && err == nil
}

// compose returns the sidecar services of each compose file, with their
// environment.
func compose(t *testing.T, docs map[string][]map[string]any) map[string][]composeSidecar {
	t.Helper()
	out := map[string][]composeSidecar{}
	for path, ds := range docs {
		for _, d := range ds {
			services, _ := get(d, "services").(map[string]any)
			for _, name := range slices.Sorted(func(yield func(string) bool) {
				for n := range services {
					if !yield(n) {
						return
					}
				}
			}) {
				svc, _ := services[name].(map[string]any)
				if !isSidecarService(name) || svc == nil {
					continue
				}
				var env []setting
				switch e := svc["environment"].(type) {
				case map[string]any:
					for k, v := range e {
						env = append(env, setting{k, str(v), path + " " + name})
					}
				case []any:
					for _, kv := range e {
						k, v, _ := strings.Cut(str(kv), "=")
						env = append(env, setting{k, v, path + " " + name})
					}
				}
				for _, f := range list(svc["env_file"]) {
					env = append(env, dockerfileEnvFile(t, filepath.Join(filepath.Dir(path), str(f)))...)
				}
				out[path] = append(out[path], composeSidecar{name: name, service: svc, env: env})
			}
		}
	}
	return out
}

func dockerfileEnvFile(t *testing.T, path string) []setting {
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []setting
	for _, l := range strings.Split(string(raw), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			k, v, _ := strings.Cut(l, "=")
			out = append(out, setting{k, v, path})
		}
	}
	return out
}

// loads checks that env (later entries win) is a configuration the sidecar
// starts with, and returns it.
func loads(t *testing.T, where string, env []setting) Config {
	t.Helper()
	var environ []string
	m := map[string]string{}
	for _, s := range env {
		environ = append(environ, s.name+"="+s.value)
		m[s.name] = s.value
	}
	c, err := Load(environ)
	if err != nil {
		t.Errorf("%s: the sidecar would not start: %v", where, err)
	}
	if err := telemetry.Validate(func(k string) string { return m[k] }); err != nil {
		t.Errorf("%s: %v", where, err)
	}
	return c
}

func withImage(image, env []setting) []setting {
	return append(append([]setting(nil), image...), env...)
}

// TestDeployVariablesAreKnown: every variable the Dockerfile, the
// Kubernetes examples (the sidecar container's env, the ConfigMaps and
// Secrets it takes with envFrom or by key) and the compose file set for a
// sidecar is one the binary reads, and together they are a configuration it
// starts with.
func TestDeployVariablesAreKnown(t *testing.T) {
	image := dockerfileEnv(t, "../../Dockerfile")
	stacks := compose(t, yamlDocs(t, "../../deploy/compose"))
	if len(image) == 0 || len(stacks) == 0 {
		t.Fatalf("found %d ENV in the Dockerfile, %d compose files with a %q service", len(image), len(stacks), sidecarName)
	}
	all := append([]setting(nil), image...)
	for _, dir := range kustomizations(t) {
		pods := kubernetes(t, kustomization(t, dir))
		if len(pods) == 0 {
			t.Errorf("%s: no %s container", dir, sidecarName)
		}
		for _, p := range pods {
			all = append(all, p.names...)
			loads(t, p.where, withImage(image, p.env))
		}
	}
	for _, sidecars := range stacks {
		for _, s := range sidecars {
			all = append(all, s.env...)
			loads(t, s.env[0].where, withImage(image, s.env))
		}
	}
	for _, s := range all {
		if !known(s.name) {
			t.Errorf("%s sets %s, which the sidecar does not read", s.where, s.name)
		}
	}
}

// TestKubernetesPodFitsTheSidecar: probes on the admin port, the Service
// on the sidecar's port, the pod's identity for telemetry, DATA_DIR on a
// volume in embedded mode, and a grace period long enough for the drain:
// longer than the preStop sleep + SHUTDOWN_GRACE + HANDOFF_TIMEOUT, with the
// conversation service outliving the sidecar's drain.
func TestKubernetesPodFitsTheSidecar(t *testing.T) {
	image := dockerfileEnv(t, "../../Dockerfile")
	for _, dir := range kustomizations(t) {
		docs := kustomization(t, dir)
		pods := kubernetes(t, docs)
		if len(pods) == 0 {
			t.Errorf("%s: no sidecar container", dir)
		}
		for _, p := range pods {
			checkPod(t, docs, p, loads(t, p.where, withImage(image, p.env)))
		}
	}
}

func checkPod(t *testing.T, docs map[string][]map[string]any, p k8s, cfg Config) {
	c := p.container
	port := func(v any) string { // a named or numbered container port
		for _, cp := range list(c["ports"]) {
			if str(get(cp, "name")) == str(v) {
				return str(get(cp, "containerPort"))
			}
		}
		return str(v)
	}
	adminHost, adminPort, _ := net.SplitHostPort(cfg.AdminAddr)
	if adminHost != "" && adminHost != "0.0.0.0" && adminHost != "::" {
		t.Errorf("%s: ADMIN_ADDR=%s: the kubelet's probes cannot reach it", p.where, cfg.AdminAddr)
	}
	for probe, path := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
		if got := str(get(c, probe, "httpGet", "path")); got != path {
			t.Errorf("%s: %s path %q, want %s", p.where, probe, got, path)
		}
		if got := port(get(c, probe, "httpGet", "port")); got != adminPort {
			t.Errorf("%s: %s on port %s, want the admin port %s", p.where, probe, got, adminPort)
		}
	}
	_, listenPort, _ := net.SplitHostPort(cfg.ListenAddr)
	services := 0
	for _, ds := range docs {
		for _, d := range ds {
			if str(d["kind"]) != "Service" || !selects(get(d, "spec", "selector"), podLabels(p)) {
				continue
			}
			services++
			for _, sp := range list(get(d, "spec", "ports")) {
				if got := port(get(sp, "targetPort")); got != listenPort {
					t.Errorf("%s: the Service %s targets port %s, not the sidecar's %s", p.where, str(get(d, "metadata", "name")), got, listenPort)
				}
			}
		}
	}
	if services == 0 {
		t.Errorf("%s: no Service selects the sidecar's pods", p.where)
	}
	for name, field := range map[string]string{"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"} {
		found := false
		for _, e := range list(c["env"]) {
			found = found || str(get(e, "name")) == name && str(get(e, "valueFrom", "fieldRef", "fieldPath")) == field
		}
		if !found {
			t.Errorf("%s: %s does not come from the downward API's %s", p.where, name, field)
		}
	}
	if cfg.RedisURL == "" { // embedded: the store is a file under DATA_DIR
		if mountedFrom(p, cfg.DataDir) == nil {
			t.Errorf("%s: DATA_DIR=%s is not on a volume", p.where, cfg.DataDir)
		}
	}
	if get(c, "resources", "requests") == nil || get(c, "resources", "limits", "memory") == nil {
		t.Errorf("%s: the sidecar has no resource requests or memory limit", p.where)
	}

	sleep := func(c any) time.Duration {
		s, _ := strconv.Atoi(str(get(c, "lifecycle", "preStop", "sleep", "seconds")))
		return time.Duration(s) * time.Second
	}
	preStop := sleep(c)
	if preStop == 0 {
		t.Errorf("%s: the sidecar has no preStop sleep: traffic may still arrive after SIGTERM", p.where)
	}
	grace, _ := strconv.Atoi(str(p.pod["terminationGracePeriodSeconds"]))
	need := preStop + cfg.ShutdownGrace + cfg.HandoffTimeout
	if time.Duration(grace)*time.Second <= need {
		t.Errorf("%s: terminationGracePeriodSeconds %d, want more than preStop %s + SHUTDOWN_GRACE %s + HANDOFF_TIMEOUT %s",
			p.where, grace, preStop, cfg.ShutdownGrace, cfg.HandoffTimeout)
	}
	for _, other := range list(p.pod["containers"]) {
		if str(get(other, "name")) == sidecarName {
			continue
		}
		if s := sleep(other); s < preStop+cfg.ShutdownGrace {
			t.Errorf("%s: container %s stops after %s, before the sidecar's drain ends (%s)", p.where, str(get(other, "name")), s, preStop+cfg.ShutdownGrace)
		}
		if s := sleep(other); time.Duration(grace)*time.Second <= s {
			t.Errorf("%s: container %s's preStop %s does not fit terminationGracePeriodSeconds %d", p.where, str(get(other, "name")), s, grace)
		}
	}
}

// podLabels are the labels of p's pods: a workload's template's, a Pod's own.
func podLabels(p k8s) any {
	if str(p.workload["kind"]) == "Pod" {
		return get(p.workload, "metadata", "labels")
	}
	return get(p.workload, "spec", "template", "metadata", "labels")
}

// selects reports whether a Service selector matches a pod's labels.
func selects(selector, labels any) bool {
	sel, _ := selector.(map[string]any)
	lab, _ := labels.(map[string]any)
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if str(lab[k]) != str(v) {
			return false
		}
	}
	return true
}

// mountedFrom is the pod volume mounted at dir in the sidecar container
// (nil: none).
func mountedFrom(p k8s, dir string) map[string]any {
	for _, m := range list(p.container["volumeMounts"]) {
		if filepath.Clean(str(get(m, "mountPath"))) != filepath.Clean(dir) {
			continue
		}
		for _, v := range list(p.pod["volumes"]) {
			if str(get(v, "name")) == str(get(m, "name")) {
				vol, _ := v.(map[string]any)
				return vol
			}
		}
	}
	return nil
}

// TestKubernetesReplicasFitTheStateMode: the embedded store is a file owned
// by one process, so that example runs one replica, replaced with Recreate
// (the old pod lets go of the volume before the new one opens it), its
// DATA_DIR on a PersistentVolumeClaim the example defines. Cluster mode
// shares everything through Redis, so that example runs several replicas,
// rolled one at a time without lowering capacity; REDIS_URL (it may carry a
// password) comes from a Secret, and a Redis named by an in-namespace
// Service name is one the example defines.
func TestKubernetesReplicasFitTheStateMode(t *testing.T) {
	image := dockerfileEnv(t, "../../Dockerfile")
	modes := map[string]int{}
	for _, dir := range kustomizations(t) {
		docs := kustomization(t, dir)
		defined := map[string]bool{} // "Kind/name"
		for _, ds := range docs {
			for _, d := range ds {
				defined[str(d["kind"])+"/"+str(get(d, "metadata", "name"))] = true
			}
		}
		for _, p := range kubernetes(t, docs) {
			cfg := loads(t, p.where, withImage(image, p.env))
			kind := str(p.workload["kind"])
			replicas := str(get(p.workload, "spec", "replicas"))
			if replicas == "" {
				replicas = "1" // Kubernetes' default
			}
			n, _ := strconv.Atoi(replicas)
			strategy := str(get(p.workload, "spec", "strategy", "type"))
			if cfg.RedisURL == "" {
				modes["embedded"]++
				if kind != "Deployment" || n != 1 || strategy != "Recreate" {
					t.Errorf("%s: embedded mode: a %s with %d replicas and strategy %q; want a Deployment with replicas 1 and strategy Recreate (one process owns DATA_DIR)",
						p.where, kind, n, strategy)
				}
				vol := mountedFrom(p, cfg.DataDir)
				claim := str(get(vol, "persistentVolumeClaim", "claimName"))
				if claim == "" || !defined["PersistentVolumeClaim/"+claim] {
					t.Errorf("%s: DATA_DIR=%s is not on a PersistentVolumeClaim the example defines (claim %q): state and outbox must outlive the pod",
						p.where, cfg.DataDir, claim)
				}
				continue
			}
			modes["cluster"]++
			if kind != "Deployment" || n < 2 {
				t.Errorf("%s: cluster mode: a %s with %d replicas; want a Deployment with at least 2", p.where, kind, n)
			}
			if strategy == "Recreate" {
				t.Errorf("%s: cluster mode with strategy Recreate: every replica would stop at once; want RollingUpdate", p.where)
			}
			if mu := str(get(p.workload, "spec", "strategy", "rollingUpdate", "maxUnavailable")); mu != "0" {
				t.Errorf("%s: rollingUpdate.maxUnavailable %q, want 0: a new pod is ready before an old one stops", p.where, mu)
			}
			if !p.fromSecret["REDIS_URL"] {
				t.Errorf("%s: REDIS_URL does not come from a Secret (it may carry a password)", p.where)
			}
			u, err := url.Parse(cfg.RedisURL)
			if err != nil {
				continue // loads reported it
			}
			if host := u.Hostname(); !strings.Contains(host, ".") && net.ParseIP(host) == nil && !defined["Service/"+host] {
				t.Errorf("%s: REDIS_URL names host %q, which is no Service of the example", p.where, host)
			}
		}
	}
	if modes["embedded"] == 0 || modes["cluster"] == 0 {
		t.Errorf("want an embedded and a cluster example, found %v", modes)
	}
}

// TestComposeStackIsACluster: the compose stack runs two or more sidecar
// replicas sharing one REDIS_URL, on their own published ports, with a
// Redis service of the stack that keeps its writes (appendonly) and never
// evicts, and a stop grace period long enough for the drain.
func TestComposeStackIsACluster(t *testing.T) {
	image := dockerfileEnv(t, "../../Dockerfile")
	docs := yamlDocs(t, "../../deploy/compose")
	for path, sidecars := range compose(t, docs) {
		if len(sidecars) < 2 {
			t.Errorf("%s: %d sidecar services, want at least 2 (cluster mode)", path, len(sidecars))
		}
		var doc map[string]any
		for _, d := range docs[path] {
			if get(d, "services") != nil {
				doc = d
			}
		}
		redisURLs := map[string]bool{}
		published := map[string]string{}
		for _, s := range sidecars {
			cfg := loads(t, path+" "+s.name, withImage(image, s.env))
			redisURLs[cfg.RedisURL] = true
			if cfg.RedisURL == "" {
				t.Errorf("%s: %s has no REDIS_URL", path, s.name)
				continue
			}
			u, err := url.Parse(cfg.RedisURL)
			if err != nil {
				continue
			}
			redis, _ := get(doc, "services", u.Hostname()).(map[string]any)
			if redis == nil {
				t.Errorf("%s: %s's REDIS_URL names %q, which is no service of the stack", path, s.name, u.Hostname())
			} else {
				var args []string
				for _, a := range list(redis["command"]) {
					args = append(args, str(a))
				}
				cmd := strings.Join(args, " ")
				if !strings.Contains(cmd, "--appendonly yes") || !strings.Contains(cmd, "--maxmemory-policy noeviction") {
					t.Errorf("%s: service %s runs %q; want --appendonly yes and --maxmemory-policy noeviction", path, u.Hostname(), cmd)
				}
			}
			for _, pp := range list(s.service["ports"]) {
				host, _, _ := strings.Cut(str(pp), ":")
				if other, dup := published[host]; dup {
					t.Errorf("%s: %s and %s both publish port %s", path, other, s.name, host)
				}
				published[host] = s.name
			}
			grace, err := time.ParseDuration(str(s.service["stop_grace_period"]))
			if need := cfg.ShutdownGrace + cfg.HandoffTimeout + 5*time.Second; err != nil || grace <= need {
				t.Errorf("%s: %s's stop_grace_period %q, want more than SHUTDOWN_GRACE %s + HANDOFF_TIMEOUT %s + 5s",
					path, s.name, str(s.service["stop_grace_period"]), cfg.ShutdownGrace, cfg.HandoffTimeout)
			}
		}
		if len(redisURLs) != 1 {
			t.Errorf("%s: the sidecars use %d different REDIS_URLs, want one shared", path, len(redisURLs))
		}
	}
}
