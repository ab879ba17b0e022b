// Command validate checks the output of `helm template` for the omega-node
// chart (and the manifests beside it) without a cluster and without any
// download at run time:
//
//  1. every object is decoded with the Kubernetes Go types through
//     apimachinery's strict serializer: an unknown kind, an unknown or
//     duplicated field or a value of the wrong type is an error;
//  2. the objects fit together: names and labels are valid, selectors match
//     the pod labels, Service target ports name container ports of the same
//     protocol, probes use declared ports, mounts use declared volumes, and
//     ConfigMaps and Secrets referenced by name are rendered here or named
//     with -external;
//  3. the omega-node container matches the binary: its subcommand and every
//     flag and OMEGA_* variable appear in the binary's own --help text
//     (-top-help, -serve-help), value flags carry a value, the required flags
//     are given, the QUIC and admin container ports are the --listen and
//     --admin ports, and the probes ask admin paths that the node answers
//     without a token (read from the router's source, -admin-source);
//  4. with -config-out, each ConfigMap's node.toml is written there for
//     `omega-node check-config`.
//
// Usage: validate [flags] FILE... (FILE "-" is standard input). It prints a
// line per object and exits 1 with every problem listed when there is one.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// nodeContainer is the name of the chart's omega-node container.
const nodeContainer = "omega-node"

type checker struct {
	problems []string
}

func (c *checker) fail(where, format string, args ...any) {
	c.problems = append(c.problems, where+": "+fmt.Sprintf(format, args...))
}

// object is one decoded manifest.
type object struct {
	source string
	kind   string
	name   string
	obj    runtime.Object
}

func main() {
	topHelp := flag.String("top-help", "", "file holding `omega-node --help`")
	serveHelp := flag.String("serve-help", "", "file holding `omega-node serve --help`")
	adminSource := flag.String("admin-source", "", "the admin router's source (constellation-node/src/admin.rs)")
	configOut := flag.String("config-out", "", "directory to write each ConfigMap's node.toml into")
	external := flag.String("external", "", "comma-separated ConfigMap/Secret names that exist outside these files")
	flag.Parse()
	if flag.NArg() == 0 || *topHelp == "" || *serveHelp == "" || *adminSource == "" {
		fmt.Fprintln(os.Stderr, "usage: validate -top-help F -serve-help F -admin-source F [-config-out DIR] [-external a,b] FILE...")
		os.Exit(2)
	}
	bin, err := loadBinary(*topHelp, *serveHelp, *adminSource)
	if err != nil {
		fmt.Fprintln(os.Stderr, "validate:", err)
		os.Exit(2)
	}
	c := &checker{}
	var objects []object
	for _, file := range flag.Args() {
		objs, err := decodeFile(file)
		if err != nil {
			c.fail(file, "%v", err)
			continue
		}
		objects = append(objects, objs...)
	}
	externals := map[string]bool{}
	for _, n := range strings.Split(*external, ",") {
		if n != "" {
			externals[n] = true
		}
	}
	checkObjects(c, objects, externals, bin)
	if *configOut != "" {
		if err := writeConfigs(objects, *configOut); err != nil {
			c.fail(*configOut, "%v", err)
		}
	}
	for _, o := range objects {
		fmt.Printf("ok %s %s/%s\n", o.source, o.kind, o.name)
	}
	if len(c.problems) > 0 {
		for _, p := range c.problems {
			fmt.Fprintln(os.Stderr, "error:", p)
		}
		os.Exit(1)
	}
	fmt.Printf("%d objects valid\n", len(objects))
}

// decodeFile strictly decodes every YAML document of a file.
func decodeFile(file string) ([]object, error) {
	var r io.Reader
	if file == "-" {
		r = os.Stdin
	} else {
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	strict := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
		kjson.SerializerOptions{Yaml: true, Strict: true})
	reader := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var out []object
	for i := 1; ; i++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("document %d: %w", i, err)
		}
		var probe map[string]any
		if err := yaml.Unmarshal(doc, &probe); err != nil {
			return out, fmt.Errorf("document %d: %w", i, err)
		}
		if len(probe) == 0 {
			continue // only comments
		}
		where := fmt.Sprintf("%s#%d", file, i)
		obj, gvk, err := strict.Decode(doc, nil, nil)
		if err != nil {
			return out, fmt.Errorf("%s: %w", where, err)
		}
		meta, ok := obj.(metav1.Object)
		if !ok {
			return out, fmt.Errorf("%s: %s has no object metadata", where, gvk.Kind)
		}
		out = append(out, object{source: where, kind: gvk.Kind, name: meta.GetName(), obj: obj})
	}
}

func checkObjects(c *checker, objects []object, externals map[string]bool, bin *binary) {
	configMaps := map[string]*corev1.ConfigMap{}
	secrets := map[string]bool{}
	seen := map[string]bool{}
	for _, o := range objects {
		key := o.kind + "/" + o.name
		if seen[key] {
			c.fail(o.source, "%s is rendered twice", key)
		}
		seen[key] = true
		meta := o.obj.(metav1.Object)
		for _, e := range validation.IsDNS1123Subdomain(meta.GetName()) {
			c.fail(o.source, "name %q: %s", meta.GetName(), e)
		}
		checkLabels(c, o.source, meta.GetLabels())
		switch v := o.obj.(type) {
		case *corev1.ConfigMap:
			configMaps[v.Name] = v
		case *corev1.Secret:
			secrets[v.Name] = true
		}
	}
	var podSets []podSet
	for _, o := range objects {
		switch v := o.obj.(type) {
		case *appsv1.StatefulSet:
			checkSelector(c, o.source, v.Spec.Selector, v.Spec.Template.Labels)
			claims := map[string]bool{}
			for _, t := range v.Spec.VolumeClaimTemplates {
				claims[t.Name] = true
			}
			if v.Spec.ServiceName != "" && !hasObject(objects, "Service", v.Spec.ServiceName) {
				c.fail(o.source, "serviceName %q is not rendered", v.Spec.ServiceName)
			}
			podSets = append(podSets, podSet{o.source, v.Spec.Template, claims})
		case *appsv1.Deployment:
			checkSelector(c, o.source, v.Spec.Selector, v.Spec.Template.Labels)
			podSets = append(podSets, podSet{o.source, v.Spec.Template, nil})
		}
	}
	nodes := 0
	for _, ps := range podSets {
		nodes += checkPod(c, ps, configMaps, secrets, externals, bin)
	}
	if nodes == 0 {
		c.fail("input", "no pod template has a container named %q", nodeContainer)
	}
	for _, o := range objects {
		switch v := o.obj.(type) {
		case *corev1.Service:
			checkService(c, o.source, v, podSets)
		case *policyv1.PodDisruptionBudget:
			if v.Spec.Selector == nil || !selectsAny(v.Spec.Selector.MatchLabels, podSets) {
				c.fail(o.source, "the selector matches no rendered pod")
			}
			if (v.Spec.MinAvailable == nil) == (v.Spec.MaxUnavailable == nil) {
				c.fail(o.source, "exactly one of minAvailable and maxUnavailable")
			}
		}
	}
}

type podSet struct {
	source string
	tmpl   corev1.PodTemplateSpec
	claims map[string]bool
}

func hasObject(objects []object, kind, name string) bool {
	for _, o := range objects {
		if o.kind == kind && o.name == name {
			return true
		}
	}
	return false
}

func checkLabels(c *checker, where string, labels map[string]string) {
	for k, v := range labels {
		for _, e := range validation.IsQualifiedName(k) {
			c.fail(where, "label key %q: %s", k, e)
		}
		for _, e := range validation.IsValidLabelValue(v) {
			c.fail(where, "label %s=%q: %s", k, v, e)
		}
	}
}

func checkSelector(c *checker, where string, sel *metav1.LabelSelector, labels map[string]string) {
	if sel == nil || len(sel.MatchLabels) == 0 {
		c.fail(where, "no selector matchLabels")
		return
	}
	for k, v := range sel.MatchLabels {
		if labels[k] != v {
			c.fail(where, "the selector %s=%s does not match the pod template's labels", k, v)
		}
	}
}

func selectsAny(sel map[string]string, podSets []podSet) bool {
	if len(sel) == 0 {
		return false
	}
	for _, ps := range podSets {
		match := true
		for k, v := range sel {
			if ps.tmpl.Labels[k] != v {
				match = false
			}
		}
		if match {
			return true
		}
	}
	return false
}

func checkService(c *checker, where string, s *corev1.Service, podSets []podSet) {
	var selected []podSet
	for _, ps := range podSets {
		if selectsAny(s.Spec.Selector, []podSet{ps}) {
			selected = append(selected, ps)
		}
	}
	if len(selected) == 0 {
		c.fail(where, "the selector matches no rendered pod")
		return
	}
	for _, p := range s.Spec.Ports {
		if p.Port < 1 || p.Port > 65535 {
			c.fail(where, "port %d out of range", p.Port)
		}
		proto := p.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		for _, ps := range selected {
			port, ok := findPort(ps.tmpl.Spec.Containers, p.TargetPort)
			if !ok {
				c.fail(where, "targetPort %s is no container port of %s", p.TargetPort.String(), ps.source)
				continue
			}
			if port.Protocol != proto {
				c.fail(where, "port %s is %s but the container port is %s", p.Name, proto, port.Protocol)
			}
		}
	}
}

// findPort resolves a named or numbered port among the containers' ports.
func findPort(containers []corev1.Container, target intstr.IntOrString) (corev1.ContainerPort, bool) {
	for _, ctr := range containers {
		for _, p := range ctr.Ports {
			if (target.Type == intstr.String && p.Name == target.StrVal) ||
				(target.Type == intstr.Int && p.ContainerPort == target.IntVal) {
				if p.Protocol == "" {
					p.Protocol = corev1.ProtocolTCP
				}
				return p, true
			}
		}
	}
	return corev1.ContainerPort{}, false
}

// checkPod checks one pod template and returns how many omega-node
// containers it has.
func checkPod(c *checker, ps podSet, configMaps map[string]*corev1.ConfigMap, secrets, externals map[string]bool, bin *binary) int {
	spec := ps.tmpl.Spec
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		if _, dup := volumes[v.Name]; dup {
			c.fail(ps.source, "volume %q declared twice", v.Name)
		}
		volumes[v.Name] = v
		refs := map[string]bool{} // Secret names
		if v.Secret != nil {
			refs[v.Secret.SecretName] = true
		}
		if v.Projected != nil {
			for _, src := range v.Projected.Sources {
				if src.Secret != nil {
					refs[src.Secret.Name] = true
				}
				if src.ConfigMap != nil && configMaps[src.ConfigMap.Name] == nil && !externals[src.ConfigMap.Name] {
					c.fail(ps.source, "volume %q: ConfigMap %q is not rendered (nor -external)", v.Name, src.ConfigMap.Name)
				}
			}
		}
		for name := range refs {
			if !secrets[name] && !externals[name] {
				c.fail(ps.source, "volume %q: Secret %q is not rendered (nor -external)", v.Name, name)
			}
		}
		if v.ConfigMap != nil && configMaps[v.ConfigMap.Name] == nil && !externals[v.ConfigMap.Name] {
			c.fail(ps.source, "volume %q: ConfigMap %q is not rendered (nor -external)", v.Name, v.ConfigMap.Name)
		}
	}
	all := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
	for _, ctr := range all {
		where := ps.source + " container " + ctr.Name
		if ctr.Image == "" {
			c.fail(where, "no image")
		}
		for _, p := range ctr.Ports {
			for _, e := range validation.IsValidPortName(p.Name) {
				c.fail(where, "port name %q: %s", p.Name, e)
			}
		}
		for _, m := range ctr.VolumeMounts {
			v, ok := volumes[m.Name]
			if !ok && !ps.claims[m.Name] {
				c.fail(where, "mount %q: no such volume or claim template", m.Name)
				continue
			}
			if m.SubPath != "" && v.ConfigMap != nil {
				if cm := configMaps[v.ConfigMap.Name]; cm != nil {
					if _, ok := cm.Data[m.SubPath]; !ok {
						c.fail(where, "mount %q: ConfigMap %q has no key %q", m.Name, cm.Name, m.SubPath)
					}
				}
			}
		}
		for _, e := range ctr.Env {
			for _, msg := range validation.IsEnvVarName(e.Name) {
				c.fail(where, "env %q: %s", e.Name, msg)
			}
		}
		for _, probe := range []*corev1.Probe{ctr.LivenessProbe, ctr.ReadinessProbe, ctr.StartupProbe} {
			if probe != nil && probe.HTTPGet != nil {
				if _, ok := findPort([]corev1.Container{ctr}, probe.HTTPGet.Port); !ok {
					c.fail(where, "probe port %s is not a port of this container", probe.HTTPGet.Port.String())
				}
			}
		}
	}
	found := 0
	for _, ctr := range spec.Containers {
		if ctr.Name == nodeContainer {
			found++
			checkNode(c, ps.source+" container "+ctr.Name, ctr, bin)
		}
	}
	return found
}

// checkNode compares the omega-node container with what the binary accepts.
func checkNode(c *checker, where string, ctr corev1.Container, bin *binary) {
	args := append(append([]string{}, ctr.Command...), ctr.Args...)
	if len(args) == 0 || !bin.commands[args[0]] {
		c.fail(where, "the first argument must be one of omega-node's subcommands %v, not %q", keys(bin.commands), first(args))
		return
	}
	if args[0] != "serve" {
		c.fail(where, "the node container runs %q, not serve", args[0])
		return
	}
	given := map[string]string{}
	for _, a := range args[1:] {
		name, value, hasValue := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") {
			c.fail(where, "argument %q: write flags as --name=value", a)
			continue
		}
		takesValue, known := bin.flags[name]
		switch {
		case !known:
			c.fail(where, "flag --%s is not an option of omega-node serve", name)
		case takesValue && !hasValue:
			c.fail(where, "flag --%s needs a value (--%s=...)", name, name)
		case takesValue && value == "":
			c.fail(where, "flag --%s has an empty value", name)
		case !takesValue && hasValue:
			c.fail(where, "flag --%s takes no value", name)
		}
		if _, dup := given[name]; dup {
			c.fail(where, "flag --%s given twice", name)
		}
		given[name] = value
	}
	envs := map[string]bool{}
	for _, e := range ctr.Env {
		if strings.HasPrefix(e.Name, "OMEGA_") && !bin.envs[e.Name] {
			c.fail(where, "env %s is not read by omega-node serve", e.Name)
		}
		envs[e.Name] = true
	}
	for _, req := range bin.required {
		if _, ok := given[req]; !ok && !envs[bin.flagEnv[req]] {
			c.fail(where, "required flag --%s (or %s) is missing", req, bin.flagEnv[req])
		}
	}
	if !envs["OMEGA_NODE_NAME"] && given["node-name"] == "" {
		c.fail(where, "no node name: each pod needs its own (OMEGA_NODE_NAME from the pod name)")
	}
	for _, pair := range []struct{ flag, port, proto string }{
		{"listen", "quic", "UDP"}, {"admin", "admin", "TCP"},
	} {
		addr, ok := given[pair.flag]
		if !ok {
			c.fail(where, "--%s must be given (the container port depends on it)", pair.flag)
			continue
		}
		want, err := portOf(addr)
		if err != nil {
			c.fail(where, "--%s=%s: %v", pair.flag, addr, err)
			continue
		}
		p, ok := findPort([]corev1.Container{ctr}, intstr.FromString(pair.port))
		if !ok {
			c.fail(where, "no container port named %q", pair.port)
			continue
		}
		if p.ContainerPort != want || string(p.Protocol) != pair.proto {
			c.fail(where, "container port %s is %d/%s but --%s listens on %d/%s", pair.port, p.ContainerPort, p.Protocol, pair.flag, want, pair.proto)
		}
	}
	adminPort, _ := portOf(given["admin"])
	for _, pr := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", ctr.LivenessProbe, "/health"}, {"readiness", ctr.ReadinessProbe, "/ready"}, {"startup", ctr.StartupProbe, ""}} {
		if pr.probe == nil {
			if pr.name != "startup" {
				c.fail(where, "no %s probe", pr.name)
			}
			continue
		}
		if pr.probe.HTTPGet == nil {
			c.fail(where, "the %s probe is not an HTTP GET on the admin API", pr.name)
			continue
		}
		path := pr.probe.HTTPGet.Path
		if !bin.routes[path] {
			c.fail(where, "%s probe path %q is not an admin route (%v)", pr.name, path, keys(bin.routes))
		} else if !bin.open[path] {
			c.fail(where, "%s probe path %q needs a token; probes need an open path (%v)", pr.name, path, keys(bin.open))
		}
		if pr.path != "" && path != pr.path {
			c.fail(where, "%s probe should ask %s, not %s", pr.name, pr.path, path)
		}
		if p, ok := findPort([]corev1.Container{ctr}, pr.probe.HTTPGet.Port); ok && p.ContainerPort != adminPort {
			c.fail(where, "%s probe port %d is not the admin port %d", pr.name, p.ContainerPort, adminPort)
		}
		if s := pr.probe.HTTPGet.Scheme; s != "" && s != corev1.URISchemeHTTP {
			c.fail(where, "%s probe scheme %s: the admin API is plain HTTP", pr.name, s)
		}
	}
	// Files the node reads must be mounted (the model is in the image).
	for _, f := range []string{"data-dir", "certs", "config", "admin-token-file", "federation-key-file"} {
		path, ok := given[f]
		if !ok {
			continue
		}
		if !mounted(ctr.VolumeMounts, path) {
			c.fail(where, "--%s=%s is under no volume mount", f, path)
		}
	}
}

func mounted(mounts []corev1.VolumeMount, path string) bool {
	for _, m := range mounts {
		if path == m.MountPath || strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") {
			return true
		}
	}
	return false
}

func portOf(addr string) (int32, error) {
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		return 0, fmt.Errorf("no port")
	}
	p, err := strconv.ParseUint(addr[i+1:], 10, 16)
	if err != nil || p == 0 {
		return 0, fmt.Errorf("bad port %q", addr[i+1:])
	}
	return int32(p), nil
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// binary is what omega-node accepts, read from its help texts and its
// admin router's source.
type binary struct {
	commands map[string]bool
	flags    map[string]bool   // flag name → takes a value
	flagEnv  map[string]string // flag name → its environment variable
	envs     map[string]bool
	required []string
	routes   map[string]bool
	open     map[string]bool // routes answered without a token
}

var (
	commandLine = regexp.MustCompile(`^  ([a-z][a-z0-9-]*)\s{2,}\S`)
	flagLine    = regexp.MustCompile(`^\s+(?:-[A-Za-z], )?--([a-z0-9][a-z0-9-]*)( <[A-Z_]+>)?\s*$`)
	envLine     = regexp.MustCompile(`\[env: ([A-Z0-9_]+)=`)
	usageFlag   = regexp.MustCompile(`--([a-z0-9-]+) <`)
	routeLine   = regexp.MustCompile(`\.route\(\s*"(/[^"]*)"`)
	openLine    = regexp.MustCompile(`((?:"/[^"]*"\s*\|?\s*)+)=>\s*Access::Open`)
	quoted      = regexp.MustCompile(`"(/[^"]*)"`)
)

func loadBinary(topHelp, serveHelp, adminSource string) (*binary, error) {
	b := &binary{commands: map[string]bool{}, flags: map[string]bool{}, flagEnv: map[string]string{},
		envs: map[string]bool{}, routes: map[string]bool{}, open: map[string]bool{}}
	top, err := os.ReadFile(topHelp)
	if err != nil {
		return nil, err
	}
	inCommands := false
	for _, line := range strings.Split(string(top), "\n") {
		if strings.HasPrefix(line, "Commands:") {
			inCommands = true
			continue
		}
		if inCommands && !strings.HasPrefix(line, "  ") {
			inCommands = false
		}
		if m := commandLine.FindStringSubmatch(line); inCommands && m != nil && m[1] != "help" {
			b.commands[m[1]] = true
		}
	}
	serve, err := os.ReadFile(serveHelp)
	if err != nil {
		return nil, err
	}
	last := ""
	for _, line := range strings.Split(string(serve), "\n") {
		if strings.HasPrefix(line, "Usage:") {
			for _, m := range usageFlag.FindAllStringSubmatch(line, -1) {
				b.required = append(b.required, m[1])
			}
		}
		if m := flagLine.FindStringSubmatch(line); m != nil {
			last = m[1]
			b.flags[last] = m[2] != ""
		}
		if m := envLine.FindStringSubmatch(line); m != nil {
			b.envs[m[1]] = true
			if last != "" {
				b.flagEnv[last] = m[1]
			}
		}
	}
	src, err := os.ReadFile(adminSource)
	if err != nil {
		return nil, err
	}
	for _, m := range routeLine.FindAllSubmatch(src, -1) {
		b.routes[string(m[1])] = true
	}
	for _, m := range openLine.FindAllSubmatch(src, -1) {
		for _, q := range quoted.FindAllSubmatch(m[1], -1) {
			b.open[string(q[1])] = true
		}
	}
	switch {
	case len(b.commands) == 0 || !b.commands["serve"]:
		return nil, fmt.Errorf("%s: no subcommands (serve) found: is it `omega-node --help`?", topHelp)
	case len(b.flags) == 0 || len(b.required) == 0:
		return nil, fmt.Errorf("%s: no flags or no required flags found: is it `omega-node serve --help`?", serveHelp)
	case len(b.routes) == 0 || len(b.open) == 0:
		return nil, fmt.Errorf("%s: no routes or no open routes found", adminSource)
	}
	return b, nil
}

// writeConfigs writes each ConfigMap's node.toml as DIR/<name>.toml.
func writeConfigs(objects []object, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	n := 0
	for _, o := range objects {
		cm, ok := o.obj.(*corev1.ConfigMap)
		if !ok {
			continue
		}
		text, ok := cm.Data["node.toml"]
		if !ok {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, cm.Name+".toml"), bytes.TrimLeft([]byte(text), "\n"), 0o644); err != nil {
			return err
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("no ConfigMap with a node.toml was rendered")
	}
	return nil
}
