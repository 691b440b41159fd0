package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// This file is a small model of `kustomize build`: enough of it to build the
// trees under deploy/ into typed objects without a kustomize binary. It knows
// only the kustomization fields this tree uses (decoding is strict, so a new
// field fails loudly instead of being ignored), and every object is decoded
// strictly into its real Kubernetes API type from k8s.io/api.

// localConfigAnnotation marks an object kustomize drops from its output
// (kustomize api konfig.IgnoredByKustomizeAnnotation).
const localConfigAnnotation = "config.kubernetes.io/local-config"

// kustomization mirrors the subset of kustomize's Kustomization
// (kustomize.config.k8s.io/v1beta1) and Component (v1alpha1) fields this tree
// uses, with the upstream JSON names (sigs.k8s.io/kustomize/api/types).
type kustomization struct {
	APIVersion      string          `json:"apiVersion"`
	Kind            string          `json:"kind"`
	Resources       []string        `json:"resources,omitempty"`
	Components      []string        `json:"components,omitempty"`
	Images          []kustImage     `json:"images,omitempty"`
	Patches         []kustPatch     `json:"patches,omitempty"`
	SecretGenerator []kustSecretGen `json:"secretGenerator,omitempty"`
}

// kustImage mirrors kustomize types.Image.
type kustImage struct {
	Name    string `json:"name"`
	NewName string `json:"newName,omitempty"`
	NewTag  string `json:"newTag,omitempty"`
	Digest  string `json:"digest,omitempty"`
}

// kustPatch mirrors kustomize types.Patch, limited to patches from a file
// that name their target in the patch itself.
type kustPatch struct {
	Path string `json:"path"`
}

// kustSecretGen mirrors kustomize types.SecretArgs, limited to literals.
type kustSecretGen struct {
	Name     string            `json:"name"`
	Behavior string            `json:"behavior,omitempty"`
	Type     string            `json:"type,omitempty"`
	Literals []string          `json:"literals,omitempty"`
	Options  *generatorOptions `json:"options,omitempty"`
}

// generatorOptions mirrors kustomize types.GeneratorOptions.
type generatorOptions struct {
	Labels                map[string]string `json:"labels,omitempty"`
	Annotations           map[string]string `json:"annotations,omitempty"`
	DisableNameSuffixHash bool              `json:"disableNameSuffixHash,omitempty"`
}

// deletePatch is a strategic-merge patch that removes its target.
type deletePatch struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Patch string `json:"$patch"`
}

// scaledObject mirrors KEDA's keda.sh/v1alpha1 ScaledObject
// (github.com/kedacore/keda/v2 apis/keda/v1alpha1/scaledobject_types.go),
// which has no type in k8s.io/api.
type scaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              scaledObjectSpec `json:"spec"`
}

type scaledObjectSpec struct {
	ScaleTargetRef        *kedaScaleTarget `json:"scaleTargetRef"`
	PollingInterval       *int32           `json:"pollingInterval,omitempty"`
	InitialCooldownPeriod *int32           `json:"initialCooldownPeriod,omitempty"`
	CooldownPeriod        *int32           `json:"cooldownPeriod,omitempty"`
	IdleReplicaCount      *int32           `json:"idleReplicaCount,omitempty"`
	MinReplicaCount       *int32           `json:"minReplicaCount,omitempty"`
	MaxReplicaCount       *int32           `json:"maxReplicaCount,omitempty"`
	Advanced              *kedaAdvanced    `json:"advanced,omitempty"`
	Triggers              []kedaTrigger    `json:"triggers"`
	Fallback              *kedaFallback    `json:"fallback,omitempty"`
}

type kedaScaleTarget struct {
	Name                   string `json:"name"`
	APIVersion             string `json:"apiVersion,omitempty"`
	Kind                   string `json:"kind,omitempty"`
	EnvSourceContainerName string `json:"envSourceContainerName,omitempty"`
}

type kedaAdvanced struct {
	HorizontalPodAutoscalerConfig *kedaHPAConfig `json:"horizontalPodAutoscalerConfig,omitempty"`
	RestoreToOriginalReplicaCount bool           `json:"restoreToOriginalReplicaCount,omitempty"`
}

type kedaHPAConfig struct {
	Name     string                                         `json:"name,omitempty"`
	Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
}

type kedaTrigger struct {
	Type              string                         `json:"type"`
	Name              string                         `json:"name,omitempty"`
	UseCachedMetrics  bool                           `json:"useCachedMetrics,omitempty"`
	Metadata          map[string]string              `json:"metadata"`
	AuthenticationRef *kedaAuthRef                   `json:"authenticationRef,omitempty"`
	MetricType        autoscalingv2.MetricTargetType `json:"metricType,omitempty"`
}

type kedaAuthRef struct {
	Name string `json:"name"`
	Kind string `json:"kind,omitempty"`
}

type kedaFallback struct {
	FailureThreshold int32 `json:"failureThreshold"`
	Replicas         int32 `json:"replicas"`
}

// triggerAuthentication mirrors KEDA's keda.sh/v1alpha1 TriggerAuthentication
// (apis/keda/v1alpha1/triggerauthentication_types.go), secrets and env only.
type triggerAuthentication struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SecretTargetRef []kedaSecretTarget `json:"secretTargetRef,omitempty"`
		Env             []kedaEnvTarget    `json:"env,omitempty"`
	} `json:"spec"`
}

type kedaSecretTarget struct {
	Parameter string `json:"parameter"`
	Name      string `json:"name"`
	Key       string `json:"key"`
}

type kedaEnvTarget struct {
	Parameter     string `json:"parameter"`
	Name          string `json:"name"`
	ContainerName string `json:"containerName,omitempty"`
}

// object is one Kubernetes object of a build.
type object struct {
	source string         // file and document it came from, for messages
	raw    map[string]any // what patches and transformers edit
	typed  any            // raw decoded strictly into its API type
	gvk    string         // "apps/v1 Deployment"
	name   string
	annots map[string]string
}

func (o *object) String() string { return fmt.Sprintf("%s %q (%s)", o.gvk, o.name, o.source) }

// local reports whether kustomize leaves o out of its output.
func (o *object) local() bool { return o.annots[localConfigAnnotation] == "true" }

// newTyped returns a pointer to the API type of apiVersion and kind.
func newTyped(apiVersion, kind string) (any, error) {
	switch apiVersion + " " + kind {
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, nil
	case "apps/v1 StatefulSet":
		return &appsv1.StatefulSet{}, nil
	case "v1 Service":
		return &corev1.Service{}, nil
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1 Secret":
		return &corev1.Secret{}, nil
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	case "autoscaling/v2 HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, nil
	case "keda.sh/v1alpha1 ScaledObject":
		return &scaledObject{}, nil
	case "keda.sh/v1alpha1 TriggerAuthentication":
		return &triggerAuthentication{}, nil
	}
	return nil, fmt.Errorf("apiVersion %q kind %q: not a type this tree is checked against", apiVersion, kind)
}

// decode (re)decodes o.raw strictly into its API type.
func (o *object) decode() error {
	apiVersion, _ := o.raw["apiVersion"].(string)
	kind, _ := o.raw["kind"].(string)
	typed, err := newTyped(apiVersion, kind)
	if err != nil {
		return fmt.Errorf("%s: %w", o.source, err)
	}
	if err := decodeJSONStrict(o.raw, typed); err != nil {
		return fmt.Errorf("%s: %s %s: %w", o.source, apiVersion, kind, err)
	}
	meta, ok := typed.(metav1.Object)
	if !ok {
		return fmt.Errorf("%s: %T has no object metadata", o.source, typed)
	}
	if meta.GetName() == "" {
		return fmt.Errorf("%s: %s %s has no metadata.name", o.source, apiVersion, kind)
	}
	o.typed, o.gvk, o.name, o.annots = typed, apiVersion+" "+kind, meta.GetName(), meta.GetAnnotations()
	return nil
}

// decodeJSONStrict decodes raw into v the way the API server sees a YAML
// manifest kubectl sent: YAML types kept (a number is not a string), unknown
// fields refused.
func decodeJSONStrict(raw map[string]any, v any) error {
	data, err := json.Marshal(raw)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// splitDocuments splits a YAML stream at its "---" lines, dropping empty
// documents.
func splitDocuments(data []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	flush := func() {
		if len(bytes.TrimSpace(stripComments(cur.Bytes()))) > 0 {
			docs = append(docs, bytes.Clone(cur.Bytes()))
		}
		cur.Reset()
	}
	for line := range bytes.Lines(data) {
		if t := bytes.TrimSpace(line); bytes.Equal(t, []byte("---")) || bytes.HasPrefix(t, []byte("--- ")) {
			flush()
			continue
		}
		cur.Write(line)
	}
	flush()
	return docs
}

// stripComments drops whole-line comments, to tell an empty document.
func stripComments(doc []byte) []byte {
	var out bytes.Buffer
	for line := range bytes.Lines(doc) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out.Write(line)
		}
	}
	return out.Bytes()
}

// readObjects reads every document of a manifest file as an object.
func readObjects(path, rel string) ([]*object, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var objs []*object
	for i, doc := range splitDocuments(data) {
		o := &object{source: fmt.Sprintf("%s#%d", rel, i+1)}
		if err := yaml.UnmarshalStrict(doc, &o.raw); err != nil { // strict: duplicate keys
			return nil, fmt.Errorf("%s: %w", o.source, err)
		}
		if err := o.decode(); err != nil {
			return nil, err
		}
		objs = append(objs, o)
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("%s: no objects", rel)
	}
	return objs, nil
}

// builder builds kustomizations under root and records every file they read.
type builder struct {
	root string
	read map[string]bool // slash paths relative to root
}

func (b *builder) rel(path string) string {
	r, err := filepath.Rel(b.root, path)
	if err != nil {
		return path
	}
	return filepath.ToSlash(r)
}

// build returns the objects `kustomize build dir` would produce (local-config
// objects included, marked) for a Kustomization at dir.
func (b *builder) build(dir string) ([]*object, error) {
	return b.run(dir, "Kustomization", nil)
}

// run applies the kustomization of the given kind at dir on top of objs (a
// Component transforms what its parent has accumulated so far).
func (b *builder) run(dir, kind string, objs []*object) ([]*object, error) {
	kpath := filepath.Join(dir, "kustomization.yaml")
	data, err := os.ReadFile(kpath)
	if err != nil {
		return nil, err
	}
	b.read[b.rel(kpath)] = true
	var k kustomization
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		return nil, fmt.Errorf("%s: %w", b.rel(kpath), err)
	}
	wantAPI := map[string]string{"Kustomization": "kustomize.config.k8s.io/v1beta1", "Component": "kustomize.config.k8s.io/v1alpha1"}[kind]
	if k.Kind != kind || k.APIVersion != wantAPI {
		return nil, fmt.Errorf("%s: is %s %s, want %s %s", b.rel(kpath), k.APIVersion, k.Kind, wantAPI, kind)
	}
	add := func(more ...*object) error {
		for _, o := range more {
			if find(objs, o.gvk, o.name) != nil {
				return fmt.Errorf("%s: %s %q is already in the build", b.rel(kpath), o.gvk, o.name)
			}
			objs = append(objs, o)
		}
		return nil
	}
	for _, r := range k.Resources {
		p := filepath.Join(dir, r)
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("%s: resource %q: %w", b.rel(kpath), r, err)
		}
		var more []*object
		if fi.IsDir() {
			more, err = b.build(p)
		} else {
			b.read[b.rel(p)] = true
			more, err = readObjects(p, b.rel(p))
		}
		if err != nil {
			return nil, err
		}
		if err := add(more...); err != nil {
			return nil, err
		}
	}
	for _, c := range k.Components {
		if objs, err = b.run(filepath.Join(dir, c), "Component", objs); err != nil {
			return nil, err
		}
	}
	for _, g := range k.SecretGenerator {
		if objs, err = generateSecret(objs, g, b.rel(kpath)); err != nil {
			return nil, err
		}
	}
	for _, p := range k.Patches {
		path := filepath.Join(dir, p.Path)
		b.read[b.rel(path)] = true
		if objs, err = applyPatch(objs, path, b.rel(path)); err != nil {
			return nil, err
		}
	}
	for _, img := range k.Images {
		if err := setImages(objs, img); err != nil {
			return nil, fmt.Errorf("%s: images %q: %w", b.rel(kpath), img.Name, err)
		}
	}
	return objs, nil
}

func find(objs []*object, gvk, name string) *object {
	for _, o := range objs {
		if o.gvk == gvk && o.name == name {
			return o
		}
	}
	return nil
}

// generateSecret runs one secretGenerator the way kustomize does: create a
// new Secret, or replace or merge into one already in the build, keeping the
// existing annotations under the generator's.
func generateSecret(objs []*object, g kustSecretGen, source string) ([]*object, error) {
	where := fmt.Sprintf("%s: secretGenerator %q", source, g.Name)
	if g.Options == nil || !g.Options.DisableNameSuffixHash {
		// A hashed name is rewritten into every reference by kustomize; this
		// model does not do that, and the tree does not need it.
		return nil, fmt.Errorf("%s: set options.disableNameSuffixHash (name hashing is not modelled)", where)
	}
	data := map[string]any{}
	for _, l := range g.Literals {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s: literal %q is not KEY=VALUE", where, l)
		}
		data[k] = v
	}
	annots := map[string]any{}
	existing := find(objs, "v1 Secret", g.Name)
	switch g.Behavior {
	case "", "create":
		if existing != nil {
			return nil, fmt.Errorf("%s: %s exists; behavior must be merge or replace", where, existing)
		}
	case "replace", "merge":
		if existing == nil {
			return nil, fmt.Errorf("%s: behavior %s but no such Secret in the build", where, g.Behavior)
		}
		for k, v := range existing.annots {
			annots[k] = v
		}
		if g.Behavior == "merge" {
			sec := existing.typed.(*corev1.Secret)
			for k, v := range sec.StringData {
				if _, ok := data[k]; !ok {
					data[k] = v
				}
			}
			for k, v := range sec.Data {
				if _, ok := data[k]; !ok {
					data[k] = string(v)
				}
			}
		}
	default:
		return nil, fmt.Errorf("%s: unknown behavior %q", where, g.Behavior)
	}
	for k, v := range g.Options.Annotations {
		annots[k] = v
	}
	meta := map[string]any{"name": g.Name}
	if len(annots) > 0 {
		meta["annotations"] = annots
	}
	if len(g.Options.Labels) > 0 {
		meta["labels"] = g.Options.Labels
	}
	typ := g.Type
	if typ == "" {
		typ = "Opaque"
	}
	o := &object{source: where, raw: map[string]any{
		"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": typ, "stringData": data,
	}}
	if err := o.decode(); err != nil {
		return nil, err
	}
	if existing != nil {
		*existing = *o
		return objs, nil
	}
	return append(objs, o), nil
}

// applyPatch applies a strategic-merge patch file. The model handles a
// "$patch: delete" and patches without lists, for which a strategic merge is
// the same as a JSON merge patch (RFC 7386); anything else is refused rather
// than guessed at.
func applyPatch(objs []*object, path, rel string) ([]*object, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var patch map[string]any
	if err := yaml.Unmarshal(data, &patch); err != nil {
		return nil, fmt.Errorf("%s: %w", rel, err)
	}
	apiVersion, _ := patch["apiVersion"].(string)
	kind, _ := patch["kind"].(string)
	meta, _ := patch["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	target := find(objs, apiVersion+" "+kind, name)
	if target == nil {
		return nil, fmt.Errorf("%s: patch target %s %s %q is not in the build", rel, apiVersion, kind, name)
	}
	if _, ok := patch["$patch"]; ok {
		var d deletePatch
		if err := yaml.UnmarshalStrict(data, &d); err != nil {
			return nil, fmt.Errorf("%s: %w", rel, err)
		}
		if d.Patch != "delete" {
			return nil, fmt.Errorf("%s: $patch %q: only delete is modelled", rel, d.Patch)
		}
		out := make([]*object, 0, len(objs)-1)
		for _, o := range objs {
			if o != target {
				out = append(out, o)
			}
		}
		return out, nil
	}
	if hasList(patch) {
		return nil, fmt.Errorf("%s: patches with lists merge by strategic keys, which this model does not do", rel)
	}
	mergePatch(target.raw, patch)
	if err := target.decode(); err != nil {
		return nil, fmt.Errorf("after patch %s: %w", rel, err)
	}
	return objs, nil
}

func hasList(v any) bool {
	switch v := v.(type) {
	case []any:
		return true
	case map[string]any:
		for _, e := range v {
			if hasList(e) {
				return true
			}
		}
	}
	return false
}

// mergePatch applies patch to dst as an RFC 7386 JSON merge patch.
func mergePatch(dst, patch map[string]any) {
	for k, v := range patch {
		switch v := v.(type) {
		case nil:
			delete(dst, k)
		case map[string]any:
			sub, ok := dst[k].(map[string]any)
			if !ok {
				sub = map[string]any{}
				dst[k] = sub
			}
			mergePatch(sub, v)
		default:
			dst[k] = v
		}
	}
}

// setImages runs kustomize's image transformer over workload containers.
func setImages(objs []*object, img kustImage) error {
	matched := false
	for _, o := range objs {
		spec, _ := o.raw["spec"].(map[string]any)
		tmpl, _ := spec["template"].(map[string]any)
		pod, _ := tmpl["spec"].(map[string]any)
		if pod == nil {
			continue
		}
		changed := false
		for _, field := range []string{"initContainers", "containers"} {
			list, _ := pod[field].([]any)
			for _, c := range list {
				c, _ := c.(map[string]any)
				ref, _ := c["image"].(string)
				name, tag, digest := splitImage(ref)
				if name != img.Name {
					continue
				}
				if img.NewName != "" {
					name = img.NewName
				}
				if img.NewTag != "" {
					tag, digest = img.NewTag, ""
				}
				if img.Digest != "" {
					tag, digest = "", img.Digest
				}
				c["image"] = joinImage(name, tag, digest)
				changed = true
			}
		}
		if changed {
			matched = true
			if err := o.decode(); err != nil {
				return err
			}
		}
	}
	if !matched {
		return errors.New("names no container image in the build")
	}
	return nil
}

// splitImage splits "repo/name:tag@sha256:…" into its name, tag and digest.
func splitImage(ref string) (name, tag, digest string) {
	name, digest, _ = strings.Cut(ref, "@")
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name, tag = name[:i], name[i+1:]
	}
	return name, tag, digest
}

func joinImage(name, tag, digest string) string {
	switch {
	case digest != "":
		return name + "@" + digest
	case tag != "":
		return name + ":" + tag
	}
	return name
}
