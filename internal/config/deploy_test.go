package config

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
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
// sidecar's environment in three places; these tests keep them in step with
// what the binary reads.

const sidecarName = "presence-sidecar" // the container / compose service

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

// yamlDocs reads every document of every YAML file under dir.
func yamlDocs(t *testing.T, dir string) map[string][]map[string]any {
	t.Helper()
	docs := map[string][]map[string]any{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || (filepath.Ext(path) != ".yaml" && filepath.Ext(path) != ".yml") {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		dec := yaml.NewDecoder(f)
		for {
			var doc map[string]any
			if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			if doc != nil {
				docs[path] = append(docs[path], doc)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return docs
}

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

// k8s is what the Kubernetes example gives the sidecar container.
type k8s struct {
	pod       map[string]any
	container map[string]any
	env       []setting // envFrom first, then env: the order Kubernetes applies them
	where     string
}

func kubernetes(t *testing.T, docs map[string][]map[string]any) []k8s {
	t.Helper()
	sources := map[string][]setting{} // "ConfigMap/name", "Secret/name"
	for path, ds := range docs {
		for _, d := range ds {
			kind, name := str(d["kind"]), str(get(d, "metadata", "name"))
			if kind != "ConfigMap" && kind != "Secret" {
				continue
			}
			for _, field := range []string{"data", "stringData"} {
				m, _ := d[field].(map[string]any)
				for k, v := range m {
					sources[kind+"/"+name] = append(sources[kind+"/"+name], setting{k, str(v), path})
				}
			}
		}
	}
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
				k := k8s{pod: pod, container: c.(map[string]any), where: path}
				for _, ef := range list(get(c, "envFrom")) {
					for kind, ref := range map[string]string{"ConfigMap": "configMapRef", "Secret": "secretRef"} {
						if n := str(get(ef, ref, "name")); n != "" {
							s, ok := sources[kind+"/"+n]
							if !ok {
								t.Errorf("%s: envFrom names %s %q, which deploy/ does not define", path, kind, n)
							}
							k.env = append(k.env, s...)
						}
					}
				}
				for _, e := range list(get(c, "env")) {
					k.env = append(k.env, setting{str(get(e, "name")), str(get(e, "value")), path})
				}
				out = append(out, k)
			}
		}
	}
	return out
}

// compose returns the sidecar service's environment in each compose file.
func compose(t *testing.T, docs map[string][]map[string]any) map[string][]setting {
	t.Helper()
	out := map[string][]setting{}
	for path, ds := range docs {
		for _, d := range ds {
			svc, ok := get(d, "services", sidecarName).(map[string]any)
			if !ok {
				continue
			}
			var env []setting
			switch e := svc["environment"].(type) {
			case map[string]any:
				for k, v := range e {
					env = append(env, setting{k, str(v), path})
				}
			case []any:
				for _, kv := range e {
					k, v, _ := strings.Cut(str(kv), "=")
					env = append(env, setting{k, v, path})
				}
			}
			for _, f := range list(svc["env_file"]) {
				env = append(env, dockerfileEnvFile(t, filepath.Join(filepath.Dir(path), str(f)))...)
			}
			out[path] = env
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

// TestDeployVariablesAreKnown: every variable the Dockerfile, the
// Kubernetes example (the sidecar container's env and the ConfigMap and
// Secret it takes with envFrom) and the compose file set for the sidecar is
// one the binary reads, and together they are a configuration it starts with.
func TestDeployVariablesAreKnown(t *testing.T) {
	image := dockerfileEnv(t, "../../Dockerfile")
	docs := yamlDocs(t, "../../deploy")
	pods := kubernetes(t, docs)
	stacks := compose(t, docs)
	if len(image) == 0 || len(pods) == 0 || len(stacks) == 0 {
		t.Fatalf("found %d ENV in the Dockerfile, %d sidecar containers in Kubernetes manifests, %d compose files with a %q service",
			len(image), len(pods), len(stacks), sidecarName)
	}
	all := append([]setting(nil), image...)
	for _, p := range pods {
		all = append(all, p.env...)
		loads(t, p.where, append(append([]setting(nil), image...), p.env...))
	}
	for path, env := range stacks {
		all = append(all, env...)
		loads(t, path, append(append([]setting(nil), image...), env...))
	}
	for _, s := range all {
		if !known(s.name) {
			t.Errorf("%s sets %s, which the sidecar does not read", s.where, s.name)
		}
	}
}

// TestKubernetesPodFitsTheSidecar: probes on the admin port, the Service
// on the sidecar's port, the pod's identity for telemetry, DATA_DIR on a
// volume, and a grace period long enough for the drain: longer than the
// preStop sleep + SHUTDOWN_GRACE + HANDOFF_TIMEOUT, with the conversation
// service outliving the sidecar's drain.
func TestKubernetesPodFitsTheSidecar(t *testing.T) {
	docs := yamlDocs(t, "../../deploy/kubernetes")
	pods := kubernetes(t, docs)
	if len(pods) == 0 {
		t.Fatal("no sidecar container")
	}
	image := dockerfileEnv(t, "../../Dockerfile")
	for _, p := range pods {
		c := p.container
		cfg := loads(t, p.where, append(append([]setting(nil), image...), p.env...))
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
			t.Errorf("ADMIN_ADDR=%s: the kubelet's probes cannot reach it", cfg.AdminAddr)
		}
		for probe, path := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
			if got := str(get(c, probe, "httpGet", "path")); got != path {
				t.Errorf("%s path %q, want %s", probe, got, path)
			}
			if got := port(get(c, probe, "httpGet", "port")); got != adminPort {
				t.Errorf("%s on port %s, want the admin port %s", probe, got, adminPort)
			}
		}
		_, listenPort, _ := net.SplitHostPort(cfg.ListenAddr)
		services := 0
		for _, ds := range docs {
			for _, d := range ds {
				if str(d["kind"]) != "Service" {
					continue
				}
				services++
				for _, sp := range list(get(d, "spec", "ports")) {
					if got := port(get(sp, "targetPort")); got != listenPort {
						t.Errorf("the Service targets port %s, not the sidecar's %s", got, listenPort)
					}
				}
			}
		}
		if services == 0 {
			t.Error("no Service")
		}
		for name, field := range map[string]string{"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"} {
			found := false
			for _, e := range list(c["env"]) {
				found = found || str(get(e, "name")) == name && str(get(e, "valueFrom", "fieldRef", "fieldPath")) == field
			}
			if !found {
				t.Errorf("%s does not come from the downward API's %s", name, field)
			}
		}
		mounted := false
		for _, m := range list(c["volumeMounts"]) {
			mounted = mounted || str(get(m, "mountPath")) == cfg.DataDir
		}
		if !mounted {
			t.Errorf("DATA_DIR=%s is not on a volume", cfg.DataDir)
		}
		if get(c, "resources", "requests") == nil || get(c, "resources", "limits", "memory") == nil {
			t.Error("the sidecar has no resource requests or memory limit")
		}

		sleep := func(c any) time.Duration {
			s, _ := strconv.Atoi(str(get(c, "lifecycle", "preStop", "sleep", "seconds")))
			return time.Duration(s) * time.Second
		}
		preStop := sleep(c)
		if preStop == 0 {
			t.Error("the sidecar has no preStop sleep: traffic may still arrive after SIGTERM")
		}
		grace, _ := strconv.Atoi(str(p.pod["terminationGracePeriodSeconds"]))
		need := preStop + cfg.ShutdownGrace + cfg.HandoffTimeout
		if time.Duration(grace)*time.Second <= need {
			t.Errorf("terminationGracePeriodSeconds %d, want more than preStop %s + SHUTDOWN_GRACE %s + HANDOFF_TIMEOUT %s",
				grace, preStop, cfg.ShutdownGrace, cfg.HandoffTimeout)
		}
		for _, other := range list(p.pod["containers"]) {
			if str(get(other, "name")) == sidecarName {
				continue
			}
			if s := sleep(other); s < preStop+cfg.ShutdownGrace {
				t.Errorf("container %s stops after %s, before the sidecar's drain ends (%s)", str(get(other, "name")), s, preStop+cfg.ShutdownGrace)
			}
			if s := sleep(other); time.Duration(grace)*time.Second <= s {
				t.Errorf("container %s's preStop %s does not fit terminationGracePeriodSeconds %d", str(get(other, "name")), s, grace)
			}
		}
	}
}
