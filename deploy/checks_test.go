package deploy

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// Names fixed by the integrator's contracts.
const (
	workerName      = "cph-rekey-worker"
	configMapName   = "cph-rekey-config"
	secretName      = "cph-rekey-credentials"
	adminPortName   = "admin"
	defaultShutdown = 25 * time.Second
	// shutdownMargin is what the pod's grace period must leave after
	// --shutdown-timeout for asynq to hand unfinished tasks back to Redis
	// before the kubelet's SIGKILL.
	shutdownMargin = 5 * time.Second
)

// pendingLists are the asynq pending lists KEDA must watch: the queues whose
// backlog is worker work (rekey-events is light and not scaled on).
var pendingLists = []string{"asynq:{rekey-submit}:pending", "asynq:{rekey-poll}:pending"}

// workerEnv is every environment variable the worker reads.
var workerEnv = []string{
	"REDIS_URL", "REKEY_REGION", "REKEY_ENDPOINT", "REKEY_CONCURRENCY", "REKEY_ADMIN_ADDR", "REKEY_ADMIN_TOKEN",
	"REKEY_UI_READONLY", "REKEY_SHUTDOWN_TIMEOUT", "REKEY_SUBMIT_RATE", "REKEY_POLL_RATE", "REKEY_READ_RATE",
	"REKEY_QUEUES", "REKEY_LIMITER", "REKEY_LOG_FORMAT",
	"REKEY_LOG_LEVEL", "REKEY_JOB_TIMEOUT", "REKEY_FIRST_POLL", "REKEY_POLL_CAP", "REKEY_CALL_TIMEOUT",
	"HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK", "HUAWEICLOUD_SDK_PROJECT_ID", "HUAWEICLOUD_SDK_SECURITY_TOKEN",
	"REKEY_IAM_TOKEN",
}

// workerNeeds is the environment the worker cannot run without in a cluster.
var workerNeeds = []string{
	"REDIS_URL", "HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK", "HUAWEICLOUD_SDK_PROJECT_ID", "REKEY_ADMIN_TOKEN", "REKEY_ADMIN_ADDR",
}

// redisScalerParams are the metadata keys of KEDA's redis (lists) scaler.
var redisScalerParams = []string{
	"address", "addressFromEnv", "host", "hostFromEnv", "port", "portFromEnv", "username", "usernameFromEnv",
	"passwordFromEnv", "listName", "listLength", "activationListLength", "databaseIndex", "enableTLS", "unsafeSsl",
}

// problems collects what is wrong, each naming where.
type problems []error

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Errorf(format, args...)) }

// checkTree runs every check on the deploy tree at dir (the module root is
// repo) and returns each problem found.
func checkTree(dir, repo string) []error {
	var p problems
	b := &builder{root: dir, read: map[string]bool{}}
	kusts, err := kustomizationDirs(dir)
	if err != nil {
		return []error{err}
	}
	for _, kd := range kusts {
		rel := b.rel(kd)
		data, err := os.ReadFile(filepath.Join(kd, "kustomization.yaml"))
		if err != nil {
			p.add("%s: %w", rel, err)
			continue
		}
		var head struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal(data, &head); err != nil {
			p.add("%s/kustomization.yaml: %w", rel, err)
			continue
		}
		if head.Kind == "Component" {
			continue // built by the overlays that use it
		}
		objs, err := b.build(kd)
		if err != nil {
			p.add("build %s: %w", rel, err)
			continue
		}
		checkBuild(&p, rel, objs)
	}
	if len(p) == 0 {
		// After a failed build the unread files are a consequence, not news.
		checkListed(&p, dir, b.read)
	}
	checkCompose(&p, filepath.Join(dir, "docker-compose.yml"))
	checkDockerfile(&p, filepath.Join(dir, "Dockerfile"), repo)
	return p
}

// kustomizationDirs lists the directories under dir holding a kustomization.
func kustomizationDirs(dir string) ([]string, error) {
	var dirs []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Name() == "kustomization.yaml" || d.Name() == "kustomization.yml" || d.Name() == "Kustomization" {
			dirs = append(dirs, filepath.Dir(path))
		}
		return nil
	})
	sort.Strings(dirs)
	if err == nil && len(dirs) == 0 {
		err = fmt.Errorf("%s: no kustomization", dir)
	}
	return dirs, err
}

// checkListed reports a manifest no kustomization reads: it would never be
// applied, and none of these checks would see it.
func checkListed(p *problems, dir string, read map[string]bool) {
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		ext := filepath.Ext(path)
		if d.IsDir() || (ext != ".yaml" && ext != ".yml") || d.Name() == "docker-compose.yml" {
			return nil
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		if !read[filepath.ToSlash(rel)] {
			p.add("%s: not listed by any kustomization that is built", filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		p.add("walk %s: %w", dir, err)
	}
}

// workload is a Deployment or StatefulSet.
type workload struct {
	obj      *object
	selector *metav1.LabelSelector
	pod      *corev1.PodTemplateSpec
}

// index is a build's objects by kind.
type index struct {
	build      string
	objs       []*object
	workloads  []workload
	services   []*corev1.Service
	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*object
}

func newIndex(build string, objs []*object) *index {
	ix := &index{build: build, objs: objs, configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*object{}}
	for _, o := range objs {
		switch t := o.typed.(type) {
		case *appsv1.Deployment:
			ix.workloads = append(ix.workloads, workload{o, t.Spec.Selector, &t.Spec.Template})
		case *appsv1.StatefulSet:
			ix.workloads = append(ix.workloads, workload{o, t.Spec.Selector, &t.Spec.Template})
		case *corev1.Service:
			ix.services = append(ix.services, t)
		case *corev1.ConfigMap:
			ix.configMaps[o.name] = t
		case *corev1.Secret:
			ix.secrets[o.name] = o
		}
	}
	return ix
}

// secretKeys returns the keys a Secret of the build defines. A local-config
// Secret is the template of one created out of band: its keys are the
// contract the real one must follow.
func (ix *index) secretKeys(name string) (map[string]string, bool) {
	o, ok := ix.secrets[name]
	if !ok {
		return nil, false
	}
	s := o.typed.(*corev1.Secret)
	keys := map[string]string{}
	for k, v := range s.Data {
		keys[k] = string(v)
	}
	for k, v := range s.StringData {
		keys[k] = v
	}
	return keys, true
}

// workloadByRef finds the workload an autoscaler targets.
func (ix *index) workloadByRef(apiVersion, kind, name string) (workload, bool) {
	for _, w := range ix.workloads {
		if w.obj.gvk == apiVersion+" "+kind && w.obj.name == name {
			return w, true
		}
	}
	return workload{}, false
}

func checkBuild(p *problems, build string, objs []*object) {
	ix := newIndex(build, objs)
	var worker *workload
	for i, w := range ix.workloads {
		checkWorkload(p, ix, w)
		if w.obj.gvk == "apps/v1 Deployment" && w.obj.name == workerName {
			worker = &ix.workloads[i]
		}
	}
	if worker == nil {
		p.add("build %s: no Deployment %q", build, workerName)
	} else {
		checkWorker(p, ix, *worker)
	}
	targets := map[string][]string{}
	for _, o := range objs {
		switch t := o.typed.(type) {
		case *corev1.Service:
			checkService(p, ix, o, t)
		case *policyv1.PodDisruptionBudget:
			checkPDB(p, ix, o, t)
		case *autoscalingv2.HorizontalPodAutoscaler:
			ref := t.Spec.ScaleTargetRef
			targets[ref.Kind+"/"+ref.Name] = append(targets[ref.Kind+"/"+ref.Name], o.String())
			checkHPA(p, ix, o, t)
		case *scaledObject:
			if ref := t.Spec.ScaleTargetRef; ref != nil {
				kind := cmp.Or(ref.Kind, "Deployment")
				targets[kind+"/"+ref.Name] = append(targets[kind+"/"+ref.Name], o.String())
			}
			checkScaledObject(p, ix, o, t)
		case *triggerAuthentication:
			for _, s := range t.Spec.SecretTargetRef {
				checkKeyRef(p, ix, o.String(), "Secret", s.Name, s.Key, false)
			}
		}
	}
	for target, by := range targets {
		if len(by) > 1 {
			p.add("build %s: %s is scaled by %d autoscalers, which fight: %s", build, target, len(by), strings.Join(by, ", "))
		}
	}
	checkInClusterAddresses(p, ix)
}

// checkWorkload checks what every workload must hold: its selector selects
// its pods, it runs restricted (non-root, read-only, no privileges), every
// reference resolves within the build.
func checkWorkload(p *problems, ix *index, w workload) {
	where := fmt.Sprintf("build %s: %s", ix.build, w.obj)
	podLabels := labels.Set(w.pod.Labels)
	if w.selector == nil {
		p.add("%s: no selector", where)
	} else if sel, err := metav1.LabelSelectorAsSelector(w.selector); err != nil {
		p.add("%s: selector: %w", where, err)
	} else if sel.Empty() || !sel.Matches(podLabels) {
		p.add("%s: selector %s does not select its pod labels %v", where, sel, podLabels)
	}
	for _, tsc := range w.pod.Spec.TopologySpreadConstraints {
		if sel, err := metav1.LabelSelectorAsSelector(tsc.LabelSelector); err != nil || sel.Empty() || !sel.Matches(podLabels) {
			p.add("%s: topologySpreadConstraint over %s does not select its own pods", where, tsc.TopologyKey)
		}
	}
	if ss, ok := w.obj.typed.(*appsv1.StatefulSet); ok && !slices.ContainsFunc(ix.services, func(s *corev1.Service) bool { return s.Name == ss.Spec.ServiceName }) {
		p.add("%s: serviceName %q is not a Service in the build", where, ss.Spec.ServiceName)
	}
	podSC := w.pod.Spec.SecurityContext
	if podSC == nil {
		podSC = &corev1.PodSecurityContext{}
	}
	for _, c := range w.pod.Spec.Containers {
		cw := fmt.Sprintf("%s container %q", where, c.Name)
		sc := c.SecurityContext
		if sc == nil {
			sc = &corev1.SecurityContext{}
		}
		nonRoot := cmpPtr(sc.RunAsNonRoot, podSC.RunAsNonRoot)
		uid := cmpPtr(sc.RunAsUser, podSC.RunAsUser)
		if nonRoot == nil || !*nonRoot || (uid != nil && *uid == 0) {
			p.add("%s: must run as non-root (runAsNonRoot true, runAsUser not 0)", cw)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			p.add("%s: root filesystem must be read-only", cw)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			p.add("%s: allowPrivilegeEscalation must be false", cw)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
			p.add("%s: capabilities must drop ALL and add none", cw)
		}
		seccomp := cmpPtr(sc.SeccompProfile, podSC.SeccompProfile)
		if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
			p.add("%s: seccompProfile must be RuntimeDefault", cw)
		}
		for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if _, ok := c.Resources.Requests[res]; !ok {
				p.add("%s: no %s request", cw, res)
			}
			if _, ok := c.Resources.Limits[res]; !ok {
				p.add("%s: no %s limit", cw, res)
			}
		}
		for name, probe := range map[string]*corev1.Probe{"startupProbe": c.StartupProbe, "livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe} {
			if probe == nil {
				continue
			}
			var port *intstr.IntOrString
			switch {
			case probe.HTTPGet != nil:
				port = &probe.HTTPGet.Port
			case probe.TCPSocket != nil:
				port = &probe.TCPSocket.Port
			}
			if port != nil && !containerHasPort(c, *port) {
				p.add("%s: %s port %s is not a declared container port", cw, name, port)
			}
		}
		checkEnvRefs(p, ix, cw, c)
	}
}

func cmpPtr[T any](inner, outer *T) *T {
	if inner != nil {
		return inner
	}
	return outer
}

func containerHasPort(c corev1.Container, port intstr.IntOrString) bool {
	for _, cp := range c.Ports {
		if (port.Type == intstr.String && cp.Name == port.StrVal) || (port.Type == intstr.Int && cp.ContainerPort == port.IntVal) {
			return true
		}
	}
	return false
}

// varRef is a $(VAR) reference Kubernetes expands in command and args.
var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// checkEnvRefs checks that every Secret and ConfigMap key a container reads
// is defined in the build, and every $(VAR) it expands is in its env.
func checkEnvRefs(p *problems, ix *index, where string, c corev1.Container) {
	declared := map[string]bool{}
	for _, src := range c.EnvFrom {
		switch {
		case src.ConfigMapRef != nil:
			cm, ok := ix.configMaps[src.ConfigMapRef.Name]
			if !ok && !ptrTrue(src.ConfigMapRef.Optional) {
				p.add("%s: envFrom ConfigMap %q is not in the build", where, src.ConfigMapRef.Name)
			}
			if ok {
				for k := range cm.Data {
					declared[src.Prefix+k] = true
				}
			}
		case src.SecretRef != nil:
			keys, ok := ix.secretKeys(src.SecretRef.Name)
			if !ok && !ptrTrue(src.SecretRef.Optional) {
				p.add("%s: envFrom Secret %q is not in the build", where, src.SecretRef.Name)
			}
			for k := range keys {
				declared[src.Prefix+k] = true
			}
		}
	}
	for _, e := range c.Env {
		declared[e.Name] = true
		if e.ValueFrom == nil {
			continue
		}
		if r := e.ValueFrom.SecretKeyRef; r != nil {
			checkKeyRef(p, ix, fmt.Sprintf("%s env %s", where, e.Name), "Secret", r.Name, r.Key, ptrTrue(r.Optional))
		}
		if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
			checkKeyRef(p, ix, fmt.Sprintf("%s env %s", where, e.Name), "ConfigMap", r.Name, r.Key, ptrTrue(r.Optional))
		}
	}
	for _, arg := range slices.Concat(c.Command, c.Args) {
		for _, m := range varRef.FindAllStringSubmatch(arg, -1) {
			if !declared[m[1]] {
				p.add("%s: %q expands $(%s), which is not in its env", where, arg, m[1])
			}
		}
	}
}

func ptrTrue(b *bool) bool { return b != nil && *b }

func checkKeyRef(p *problems, ix *index, where, kind, name, key string, optional bool) {
	var keys map[string]string
	var ok bool
	if kind == "Secret" {
		keys, ok = ix.secretKeys(name)
	} else if cm, found := ix.configMaps[name]; found {
		keys, ok = cm.Data, true
	}
	switch {
	case !ok && !optional:
		p.add("%s: %s %q is not in the build", where, kind, name)
	case ok:
		if _, has := keys[key]; !has && !optional {
			p.add("%s: %s %q has no key %q", where, kind, name, key)
		}
	}
}

// containerEnv resolves the literal and ConfigMap-sourced environment of a
// container (Secret values are left out: they are not known for real
// deployments).
func containerEnv(ix *index, c corev1.Container) map[string]string {
	env := map[string]string{}
	for _, src := range c.EnvFrom {
		if src.ConfigMapRef != nil {
			if cm, ok := ix.configMaps[src.ConfigMapRef.Name]; ok {
				for k, v := range cm.Data {
					env[src.Prefix+k] = v
				}
			}
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.ConfigMapKeyRef != nil:
			if cm, ok := ix.configMaps[e.ValueFrom.ConfigMapKeyRef.Name]; ok {
				env[e.Name] = cm.Data[e.ValueFrom.ConfigMapKeyRef.Key]
			}
		default:
			env[e.Name] = ""
		}
	}
	return env
}

// checkWorker checks the worker Deployment against the worker's contract.
func checkWorker(p *problems, ix *index, w workload) {
	where := fmt.Sprintf("build %s: %s", ix.build, w.obj)
	i := slices.IndexFunc(w.pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == "worker" })
	if i < 0 {
		p.add("%s: no container named worker", where)
		return
	}
	c := w.pod.Spec.Containers[i]
	where += " container worker"
	if name, _, _ := splitImage(c.Image); name != "cph-rekey" && !strings.HasSuffix(name, "/cph-rekey") {
		p.add("%s: image %q is not cph-rekey", where, c.Image)
	}
	adminPort := int32(0)
	for _, cp := range c.Ports {
		if cp.Name == adminPortName {
			adminPort = cp.ContainerPort
		}
	}
	if adminPort == 0 {
		p.add("%s: no container port named %q", where, adminPortName)
	}
	for _, pr := range []struct {
		name, path string
		probe      *corev1.Probe
	}{{"livenessProbe", "/healthz", c.LivenessProbe}, {"readinessProbe", "/readyz", c.ReadinessProbe}} {
		if pr.probe == nil || pr.probe.HTTPGet == nil || pr.probe.HTTPGet.Path != pr.path || pr.probe.HTTPGet.Port.String() != adminPortName {
			p.add("%s: %s must be GET %s on port %q", where, pr.name, pr.path, adminPortName)
		}
	}
	env := containerEnv(ix, c)
	for _, name := range workerNeeds {
		if _, ok := env[name]; !ok {
			p.add("%s: environment has no %s", where, name)
		}
	}
	for _, src := range c.EnvFrom {
		if src.ConfigMapRef == nil {
			continue
		}
		cm, ok := ix.configMaps[src.ConfigMapRef.Name]
		if !ok {
			continue // reported by checkEnvRefs
		}
		for k := range cm.Data {
			if !slices.Contains(workerEnv, src.Prefix+k) {
				p.add("%s: ConfigMap %q key %s is not a variable the worker reads", where, src.ConfigMapRef.Name, k)
			}
		}
	}
	if _, port, err := net.SplitHostPort(env["REKEY_ADMIN_ADDR"]); err != nil || port != strconv.Itoa(int(adminPort)) {
		p.add("%s: REKEY_ADMIN_ADDR %q does not listen on the admin port %d", where, env["REKEY_ADMIN_ADDR"], adminPort)
	}
	if lf, ok := env["REKEY_LOG_FORMAT"]; ok && lf != "json" && lf != "text" {
		p.add("%s: REKEY_LOG_FORMAT %q: want json or text", where, lf)
	}
	shutdown, err := shutdownTimeout(c.Args, env)
	if err != nil {
		p.add("%s: %w", where, err)
	}
	grace := time.Duration(corev1.DefaultTerminationGracePeriodSeconds) * time.Second
	if g := w.pod.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	if shutdown+shutdownMargin > grace {
		p.add("%s: shutdown timeout %s + %s margin exceeds terminationGracePeriodSeconds %s: in-flight tasks would be killed, not handed back",
			where, shutdown, shutdownMargin, grace)
	}
	if len(w.pod.Spec.TopologySpreadConstraints) == 0 {
		p.add("%s: no topologySpreadConstraints: workers may all land on one node", where)
	}
}

// shutdownTimeout finds the worker's --shutdown-timeout: the flag wins over
// REKEY_SHUTDOWN_TIMEOUT, which wins over the default.
func shutdownTimeout(args []string, env map[string]string) (time.Duration, error) {
	val, from := "", ""
	for i, a := range args {
		switch {
		case strings.HasPrefix(a, "--shutdown-timeout="), strings.HasPrefix(a, "-shutdown-timeout="):
			_, val, _ = strings.Cut(a, "=")
			from = a
		case (a == "--shutdown-timeout" || a == "-shutdown-timeout") && i+1 < len(args):
			val, from = args[i+1], a+" "+args[i+1]
		}
	}
	if from == "" {
		if v, ok := env["REKEY_SHUTDOWN_TIMEOUT"]; ok {
			val, from = v, "REKEY_SHUTDOWN_TIMEOUT="+v
		}
	}
	if from == "" {
		return defaultShutdown, nil
	}
	d, err := time.ParseDuration(val)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("shutdown timeout %q: not a positive duration", from)
	}
	return d, nil
}

// selectedWorkloads returns the workloads whose pods sel selects.
func selectedWorkloads(ix *index, sel labels.Selector) []workload {
	var out []workload
	for _, w := range ix.workloads {
		if !sel.Empty() && sel.Matches(labels.Set(w.pod.Labels)) {
			out = append(out, w)
		}
	}
	return out
}

func checkService(p *problems, ix *index, o *object, s *corev1.Service) {
	where := fmt.Sprintf("build %s: %s", ix.build, o)
	ws := selectedWorkloads(ix, labels.SelectorFromSet(s.Spec.Selector))
	if len(ws) == 0 {
		p.add("%s: selector %v selects no pods of the build", where, s.Spec.Selector)
		return
	}
	for _, sp := range s.Spec.Ports {
		target := sp.TargetPort
		if target.Type == intstr.Int && target.IntVal == 0 {
			target = intstr.FromInt32(sp.Port)
		}
		for _, w := range ws {
			if !slices.ContainsFunc(w.pod.Spec.Containers, func(c corev1.Container) bool { return containerHasPort(c, target) }) {
				p.add("%s: port %q targets %s, which %s does not declare", where, sp.Name, target.String(), w.obj)
			}
		}
	}
	if o.name != workerName {
		return
	}
	a := s.Annotations
	if a["prometheus.io/scrape"] != "true" || a["prometheus.io/path"] != "/metrics" {
		p.add("%s: want annotations prometheus.io/scrape \"true\" and prometheus.io/path /metrics", where)
	}
	if !slices.ContainsFunc(s.Spec.Ports, func(sp corev1.ServicePort) bool { return strconv.Itoa(int(sp.Port)) == a["prometheus.io/port"] }) {
		p.add("%s: prometheus.io/port %q is not a port of the Service", where, a["prometheus.io/port"])
	}
}

func checkPDB(p *problems, ix *index, o *object, pdb *policyv1.PodDisruptionBudget) {
	where := fmt.Sprintf("build %s: %s", ix.build, o)
	sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil {
		p.add("%s: selector: %w", where, err)
		return
	}
	ws := selectedWorkloads(ix, sel)
	if len(ws) == 0 {
		p.add("%s: selector %s selects no pods of the build", where, sel)
	}
	if o.name == workerName {
		if !slices.ContainsFunc(ws, func(w workload) bool { return w.obj.name == workerName }) {
			p.add("%s: does not select the worker pods", where)
		}
		if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.String() != "1" || pdb.Spec.MinAvailable != nil {
			p.add("%s: want maxUnavailable 1 (and no minAvailable)", where)
		}
	}
}

func checkHPA(p *problems, ix *index, o *object, h *autoscalingv2.HorizontalPodAutoscaler) {
	where := fmt.Sprintf("build %s: %s", ix.build, o)
	ref := h.Spec.ScaleTargetRef
	w, ok := ix.workloadByRef(ref.APIVersion, ref.Kind, ref.Name)
	if !ok {
		p.add("%s: scaleTargetRef %s %s %q is not in the build", where, ref.APIVersion, ref.Kind, ref.Name)
		return
	}
	minR := int32(1)
	if h.Spec.MinReplicas != nil {
		minR = *h.Spec.MinReplicas
	}
	if minR < 1 || minR > h.Spec.MaxReplicas {
		p.add("%s: want 1 <= minReplicas (%d) <= maxReplicas (%d)", where, minR, h.Spec.MaxReplicas)
	}
	if len(h.Spec.Metrics) == 0 {
		p.add("%s: no metrics", where)
	}
	for _, m := range h.Spec.Metrics {
		if m.Type != autoscalingv2.ResourceMetricSourceType || m.Resource == nil || m.Resource.Target.Type != autoscalingv2.UtilizationMetricType {
			continue
		}
		for _, c := range w.pod.Spec.Containers {
			if _, ok := c.Resources.Requests[m.Resource.Name]; !ok {
				p.add("%s: %s utilization needs a %s request on container %q", where, m.Resource.Name, m.Resource.Name, c.Name)
			}
		}
	}
}

func checkScaledObject(p *problems, ix *index, o *object, so *scaledObject) {
	where := fmt.Sprintf("build %s: %s", ix.build, o)
	ref := so.Spec.ScaleTargetRef
	if ref == nil {
		p.add("%s: no scaleTargetRef", where)
		return
	}
	if _, ok := ix.workloadByRef(cmp.Or(ref.APIVersion, "apps/v1"), cmp.Or(ref.Kind, "Deployment"), ref.Name); !ok {
		p.add("%s: scaleTargetRef %q is not a workload in the build", where, ref.Name)
	}
	// asynq's forwarder moves scheduled and retry tasks to pending only in a
	// running server: at zero replicas the pending lists never grow again.
	if so.Spec.MinReplicaCount == nil || *so.Spec.MinReplicaCount < 1 {
		p.add("%s: minReplicaCount must be at least 1", where)
	}
	if so.Spec.MaxReplicaCount == nil || (so.Spec.MinReplicaCount != nil && *so.Spec.MaxReplicaCount < *so.Spec.MinReplicaCount) {
		p.add("%s: maxReplicaCount must be set and at least minReplicaCount", where)
	}
	var lists []string
	for i, tr := range so.Spec.Triggers {
		tw := fmt.Sprintf("%s: trigger %d", where, i)
		if tr.Type != "redis" {
			p.add("%s: type %q, want redis", tw, tr.Type)
			continue
		}
		for k := range tr.Metadata {
			if !slices.Contains(redisScalerParams, k) {
				p.add("%s: %q is not a redis scaler parameter", tw, k)
			}
		}
		lists = append(lists, tr.Metadata["listName"])
		if n, err := strconv.Atoi(tr.Metadata["listLength"]); err != nil || n < 1 {
			p.add("%s: listLength %q: want a positive integer", tw, tr.Metadata["listLength"])
		}
		addressed := tr.Metadata["address"] != "" || tr.Metadata["addressFromEnv"] != "" || tr.Metadata["host"] != "" || tr.Metadata["hostFromEnv"] != ""
		if tr.AuthenticationRef != nil {
			ta, ok := find(ix.objs, "keda.sh/v1alpha1 TriggerAuthentication", tr.AuthenticationRef.Name).typedAuth()
			if !ok {
				p.add("%s: authenticationRef %q is not a TriggerAuthentication in the build", tw, tr.AuthenticationRef.Name)
			}
			for _, s := range ta {
				addressed = addressed || s.Parameter == "address" || s.Parameter == "host"
			}
		}
		if !addressed {
			p.add("%s: no Redis address (address, host, addressFromEnv or an authentication parameter)", tw)
		}
	}
	for _, want := range pendingLists {
		if !slices.Contains(lists, want) {
			p.add("%s: no trigger on %s (triggers watch %q)", where, want, lists)
		}
	}
}

// typedAuth returns the secret targets of a TriggerAuthentication object.
func (o *object) typedAuth() ([]kedaSecretTarget, bool) {
	if o == nil {
		return nil, false
	}
	ta, ok := o.typed.(*triggerAuthentication)
	if !ok {
		return nil, false
	}
	return ta.Spec.SecretTargetRef, true
}

// checkInClusterAddresses checks the Redis and CPH addresses a build gives
// concretely (a dev overlay's generated Secret, the ConfigMap): a bare host
// name must be a Service of the build with that port, the Redis must be
// configured for asynq, and KEDA must watch the Redis the workers use.
func checkInClusterAddresses(p *problems, ix *index) {
	where := "build " + ix.build
	addrs := map[string]string{}
	if o, ok := ix.secrets[secretName]; ok && !o.local() {
		keys, _ := ix.secretKeys(secretName)
		if u := keys["REDIS_URL"]; u != "" {
			pu, err := url.Parse(u)
			if err != nil {
				p.add("%s: Secret %s REDIS_URL: %w", where, secretName, err)
			} else {
				addrs["Secret "+secretName+" REDIS_URL"] = pu.Host
				if a := keys["REDIS_ADDRESS"]; a != "" && a != pu.Host {
					p.add("%s: Secret %s: REDIS_ADDRESS %q (KEDA) is not the REDIS_URL host %q (workers)", where, secretName, a, pu.Host)
				}
			}
		}
	}
	if cm, ok := ix.configMaps[configMapName]; ok && cm.Data["REKEY_ENDPOINT"] != "" {
		if pu, err := url.Parse(cm.Data["REKEY_ENDPOINT"]); err != nil {
			p.add("%s: ConfigMap %s REKEY_ENDPOINT: %w", where, configMapName, err)
		} else {
			addrs["ConfigMap "+configMapName+" REKEY_ENDPOINT"] = pu.Host
		}
	}
	for from, hostport := range addrs {
		host, port, err := net.SplitHostPort(hostport)
		if err != nil {
			p.add("%s: %s: %q needs an explicit port", where, from, hostport)
			continue
		}
		if strings.Contains(host, ".") {
			continue // outside the build
		}
		i := slices.IndexFunc(ix.services, func(s *corev1.Service) bool { return s.Name == host })
		if i < 0 {
			p.add("%s: %s: host %q is not a Service of the build", where, from, host)
			continue
		}
		svc := ix.services[i]
		if !slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return strconv.Itoa(int(sp.Port)) == port }) {
			p.add("%s: %s: Service %q has no port %s", where, from, host, port)
		}
		if strings.HasSuffix(from, "REDIS_URL") {
			for _, w := range selectedWorkloads(ix, labels.SelectorFromSet(svc.Spec.Selector)) {
				for _, c := range w.pod.Spec.Containers {
					checkRedisServer(p, fmt.Sprintf("%s: %s container %q", where, w.obj, c.Name), c.Image, slices.Concat(c.Command, c.Args))
				}
			}
		}
	}
}

// checkRedisServer checks a Redis the workers use is fit for asynq:
// noeviction (an evicted key strands tasks in "active"), persistence, and a
// version with ZRANGE … BYSCORE.
func checkRedisServer(p *problems, where, image string, args []string) {
	cmd := strings.Join(args, " ")
	if !strings.Contains(cmd, "--maxmemory-policy noeviction") {
		p.add("%s: Redis must run with --maxmemory-policy noeviction", where)
	}
	if !strings.Contains(cmd, "--appendonly yes") {
		p.add("%s: Redis must run with --appendonly yes", where)
	}
	_, tag, _ := splitImage(image)
	var major, minor int
	if _, err := fmt.Sscanf(tag, "%d.%d", &major, &minor); err != nil || major < 6 || (major == 6 && minor < 2) {
		p.add("%s: image %q: want a Redis >= 6.2 tag", where, image)
	}
}

// compose mirrors the subset of the Compose specification
// (compose-spec.io) that docker-compose.yml uses.
type compose struct {
	Name     string                    `json:"name,omitempty"`
	Services map[string]composeService `json:"services"`
	Volumes  map[string]*struct{}      `json:"volumes,omitempty"`
}

type composeService struct {
	Image           string                       `json:"image,omitempty"`
	Build           *composeBuild                `json:"build,omitempty"`
	Entrypoint      []string                     `json:"entrypoint,omitempty"`
	Command         []string                     `json:"command,omitempty"`
	Environment     map[string]string            `json:"environment,omitempty"`
	Ports           []string                     `json:"ports,omitempty"`
	Volumes         []string                     `json:"volumes,omitempty"`
	DependsOn       map[string]composeDependency `json:"depends_on,omitempty"`
	Healthcheck     *composeHealthcheck          `json:"healthcheck,omitempty"`
	ReadOnly        bool                         `json:"read_only,omitempty"`
	StopGracePeriod string                       `json:"stop_grace_period,omitempty"`
	Restart         string                       `json:"restart,omitempty"`
	Profiles        []string                     `json:"profiles,omitempty"`
}

type composeBuild struct {
	Context    string `json:"context"`
	Dockerfile string `json:"dockerfile,omitempty"`
}

type composeDependency struct {
	Condition string `json:"condition"`
}

type composeHealthcheck struct {
	Test     []string `json:"test"`
	Interval string   `json:"interval,omitempty"`
	Timeout  string   `json:"timeout,omitempty"`
	Retries  int      `json:"retries,omitempty"`
}

// flagValue returns the value of --name in args (--name=v or --name v).
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
		if a == "--"+name && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

func checkCompose(p *problems, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		p.add("docker-compose: %w", err)
		return
	}
	var c compose
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		p.add("docker-compose.yml: %w", err)
		return
	}
	redis, okR := c.Services["redis"]
	sim, okS := c.Services["cphsim"]
	worker, okW := c.Services["worker"]
	if !okR || !okS || !okW {
		p.add("docker-compose.yml: want services redis, cphsim and worker")
		return
	}
	checkRedisServer(p, "docker-compose.yml service redis", redis.Image, redis.Command)
	if len(sim.Entrypoint) == 0 || filepath.Base(sim.Entrypoint[0]) != "cphsim" {
		p.add("docker-compose.yml service cphsim: entrypoint %q does not run cphsim", sim.Entrypoint)
	}
	simAddr, _ := flagValue(sim.Command, "addr")
	_, simPort, err := net.SplitHostPort(simAddr)
	if err != nil {
		p.add("docker-compose.yml service cphsim: --addr %q: %v", simAddr, err)
	}
	endpoint, _ := flagValue(worker.Command, "endpoint")
	if endpoint == "" {
		endpoint = worker.Environment["REKEY_ENDPOINT"]
	}
	if eu, err := url.Parse(endpoint); err != nil || eu.Hostname() != "cphsim" || eu.Port() != simPort {
		p.add("docker-compose.yml service worker: endpoint %q does not point at the cphsim service (port %s)", endpoint, simPort)
	}
	if ru, err := url.Parse(worker.Environment["REDIS_URL"]); err != nil || ru.Hostname() != "redis" {
		p.add("docker-compose.yml service worker: REDIS_URL %q does not point at the redis service", worker.Environment["REDIS_URL"])
	}
	for flag, env := range map[string]string{"ak": "HUAWEICLOUD_SDK_AK", "sk": "HUAWEICLOUD_SDK_SK", "project-id": "HUAWEICLOUD_SDK_PROJECT_ID"} {
		if v, _ := flagValue(sim.Command, flag); v == "" || v != worker.Environment[env] {
			p.add("docker-compose.yml: cphsim --%s %q and worker %s %q differ: the simulator would refuse the worker", flag, v, env, worker.Environment[env])
		}
	}
	for _, dep := range []string{"redis", "cphsim"} {
		if _, ok := worker.DependsOn[dep]; !ok {
			p.add("docker-compose.yml service worker: does not depend on %s", dep)
		}
	}
	_, adminPort, err := net.SplitHostPort(worker.Environment["REKEY_ADMIN_ADDR"])
	if err != nil {
		p.add("docker-compose.yml service worker: REKEY_ADMIN_ADDR %q: %v", worker.Environment["REKEY_ADMIN_ADDR"], err)
	}
	if !slices.ContainsFunc(worker.Ports, func(pm string) bool { return strings.HasSuffix(pm, ":"+adminPort) }) {
		p.add("docker-compose.yml service worker: admin port %s is not published", adminPort)
	}
	if worker.Environment["REKEY_ADMIN_TOKEN"] == "" {
		p.add("docker-compose.yml service worker: no REKEY_ADMIN_TOKEN, required with the admin port beyond loopback")
	}
	shutdown, err := shutdownTimeout(worker.Command, worker.Environment)
	if err != nil {
		p.add("docker-compose.yml service worker: %w", err)
	}
	grace, err := time.ParseDuration(worker.StopGracePeriod)
	if err != nil || shutdown+shutdownMargin > grace {
		p.add("docker-compose.yml service worker: stop_grace_period %q must exceed the shutdown timeout %s by %s", worker.StopGracePeriod, shutdown, shutdownMargin)
	}
}

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int
	cmd  string // upper case
	args string
}

func parseDockerfile(data string) []instruction {
	var out []instruction
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(data, "\n") {
		t := strings.TrimSpace(line)
		if cur.Len() == 0 && (t == "" || strings.HasPrefix(t, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if strings.HasPrefix(t, "#") {
			continue // a comment inside a continued instruction
		}
		if s, ok := strings.CutSuffix(t, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(t)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{start, strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

// buildCommands are the commands the image must carry.
var buildCommands = []string{"./cmd/worker", "./cmd/enqueue", "./cmd/cphsim"}

func checkDockerfile(p *problems, path, repo string) {
	data, err := os.ReadFile(path)
	if err != nil {
		p.add("Dockerfile: %w", err)
		return
	}
	ins := parseDockerfile(string(data))
	var stages [][]instruction
	for _, in := range ins {
		if in.cmd == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				p.add("Dockerfile:%d: %s before the first FROM", in.line, in.cmd)
			}
			continue
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], in)
	}
	if len(stages) < 2 {
		p.add("Dockerfile: want a multi-stage build, has %d stage(s)", len(stages))
		return
	}
	if from := stages[0][0].args; !strings.HasPrefix(from, "golang:1.26") {
		p.add("Dockerfile:%d: build stage FROM %q, want golang:1.26", stages[0][0].line, from)
	}
	var built []string
	for _, in := range stages[0] {
		if in.cmd != "RUN" || !strings.Contains(in.args, "go build") {
			continue
		}
		for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags="-s -w"`} {
			if !strings.Contains(in.args, want) {
				p.add("Dockerfile:%d: go build without %s", in.line, want)
			}
		}
		for _, f := range strings.Fields(in.args) {
			if strings.HasPrefix(f, "./cmd/") {
				built = append(built, f)
			}
		}
	}
	for _, want := range buildCommands {
		if !slices.Contains(built, want) {
			p.add("Dockerfile: does not build %s", want)
		}
	}
	for _, b := range built {
		if err := isMainPackage(filepath.Join(repo, filepath.FromSlash(b))); err != nil {
			p.add("Dockerfile: builds %s: %w", b, err)
		}
	}
	final := stages[len(stages)-1]
	from := final[0].args
	user := ""
	if strings.HasSuffix(from, ":nonroot") || strings.Contains(from, ":nonroot@") {
		user = "65532"
	}
	entry := ""
	for _, in := range final {
		switch in.cmd {
		case "USER":
			user = in.args
		case "ENTRYPOINT":
			entry = in.args
		}
	}
	if uid, _, _ := strings.Cut(user, ":"); uid == "" || uid == "0" || uid == "root" {
		p.add("Dockerfile: final stage (FROM %s) runs as root; want a nonroot base or a non-root USER", from)
	} else if _, err := strconv.Atoi(uid); err != nil {
		p.add("Dockerfile: USER %q: want a numeric uid, so runAsNonRoot can verify it", user)
	}
	if !strings.Contains(entry, "worker") {
		p.add("Dockerfile: final ENTRYPOINT %q does not run the worker", entry)
	}
}

var packageMain = regexp.MustCompile(`(?m)^package main\b`)

// isMainPackage reports whether dir holds a Go main package.
func isMainPackage(dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return err
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if packageMain.Match(data) {
			return nil
		}
	}
	return errors.New("no main package there")
}
