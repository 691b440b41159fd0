// Package deploy holds the Kubernetes manifests (kustomize), docker-compose
// file and Dockerfile of cph-rekey, and the test that proves them: with no
// cluster and no Docker engine at hand, every manifest is decoded strictly
// into its real API type and every reference between them is followed.
package deploy

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestManifests(t *testing.T) {
	for _, err := range checkTree(".", "..") {
		t.Error(err)
	}
}

// TestChecksCatchBrokenCopies breaks a copy of the tree one way at a time and
// expects the checks to name the break.
func TestChecksCatchBrokenCopies(t *testing.T) {
	tests := []struct {
		name      string
		file      string
		old, new  string
		wantError string
	}{
		{"unknown field in Deployment", "base/deployment.yaml",
			"revisionHistoryLimit: 5", "revisionHistoryLimit: 5\n  replica: 3", `unknown field "replica"`},
		{"unknown field in kustomization", "overlays/dev/kustomization.yaml",
			"images:", "commonLabels:\n  a: b\nimages:", `unknown field "commonLabels"`},
		{"unknown field in ScaledObject", "components/keda/scaledobject.yaml",
			"pollingInterval: 15", "pollingInterval: 15\n  minReplicas: 1", `unknown field "minReplicas"`},
		{"non-string KEDA metadata", "components/keda/scaledobject.yaml",
			`listLength: "8"`, `listLength: 8`, "cannot unmarshal number"},
		{"Deployment selector misses its pods", "base/deployment.yaml",
			"  selector:\n    matchLabels:\n      app.kubernetes.io/name: cph-rekey\n      app.kubernetes.io/component: worker",
			"  selector:\n    matchLabels:\n      app.kubernetes.io/name: cph-rekey\n      app.kubernetes.io/component: wrker",
			"does not select its pod labels"},
		{"Service selects nothing", "base/service.yaml",
			"  selector:\n    app.kubernetes.io/name: cph-rekey\n    app.kubernetes.io/component: worker",
			"  selector:\n    app.kubernetes.io/name: cph-rekey\n    app.kubernetes.io/component: workers",
			"selects no pods"},
		{"Service targets an undeclared port", "base/service.yaml", "targetPort: admin", "targetPort: http", "targets http"},
		{"PDB selects nothing", "base/pdb.yaml", "      app.kubernetes.io/component: worker", "      app.kubernetes.io/component: api", "selects no pods"},
		{"PDB minAvailable", "base/pdb.yaml", "maxUnavailable: 1", "minAvailable: 1", "want maxUnavailable 1"},
		{"HPA targets a missing Deployment", "base/hpa.yaml", "name: cph-rekey-worker\n  minReplicas", "name: cph-rekey\n  minReplicas",
			`scaleTargetRef apps/v1 Deployment "cph-rekey" is not in the build`},
		{"HPA and ScaledObject on one Deployment", "components/keda/kustomization.yaml",
			"patches:\n  - path: delete-hpa.yaml\n", "", "scaled by 2 autoscalers"},
		{"ScaledObject watches a wrong queue", "components/keda/scaledobject.yaml",
			"asynq:{rekey-submit}:pending", "asynq:rekey-submit:pending", "no trigger on asynq:{rekey-submit}:pending"},
		{"ScaledObject may scale to zero", "components/keda/scaledobject.yaml",
			"minReplicaCount: 1", "minReplicaCount: 0", "minReplicaCount must be at least 1"},
		{"KEDA reads a missing Secret key", "components/keda/triggerauthentication.yaml",
			"key: REDIS_ADDRESS", "key: REDIS_HOST", `has no key "REDIS_HOST"`},
		{"probe on an undeclared port", "base/deployment.yaml",
			"path: /readyz\n              port: admin", "path: /readyz\n              port: metrics", "readinessProbe port metrics is not a declared container port"},
		{"secretKeyRef to a key the Secret lacks", "base/secret.template.yaml",
			"  REKEY_ADMIN_TOKEN: REPLACE_ME-admin-token\n", "", `has no key "REKEY_ADMIN_TOKEN"`},
		{"dev Secret lacks a key", "overlays/dev/kustomization.yaml",
			"      - REDIS_URL=redis://cph-rekey-redis:6379/0\n", "", `has no key "REDIS_URL"`},
		{"envFrom a missing ConfigMap", "base/deployment.yaml",
			"configMapRef:\n                name: cph-rekey-config", "configMapRef:\n                name: cph-rekey-cfg", `envFrom ConfigMap "cph-rekey-cfg" is not in the build`},
		{"ConfigMap key the worker ignores", "base/configmap.yaml", "REKEY_SUBMIT_RATE:", "REKEY_SUBMITRATE:", "REKEY_SUBMITRATE is not a variable the worker reads"},
		{"shutdown timeout too long for the grace period", "base/deployment.yaml",
			"--shutdown-timeout=25s", "--shutdown-timeout=38s", "exceeds terminationGracePeriodSeconds"},
		{"admin address off the admin port", "base/deployment.yaml", "value: 0.0.0.0:8080", "value: 0.0.0.0:9090", "does not listen on the admin port"},
		{"root filesystem writable", "base/deployment.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "root filesystem must be read-only"},
		{"runs as root", "base/deployment.yaml", "runAsUser: 65532", "runAsUser: 0", "must run as non-root"},
		{"capabilities kept", "overlays/dev/cphsim.yaml", `drop: ["ALL"]`, `drop: ["NET_RAW"]`, "capabilities must drop ALL"},
		{"dev Redis may evict", "overlays/dev/redis.yaml", "- noeviction", "- allkeys-lru", "--maxmemory-policy noeviction"},
		{"dev Redis too old", "overlays/dev/redis.yaml", "image: redis:7.4", "image: redis:6.0", "want a Redis >= 6.2"},
		{"REDIS_URL names no Service", "overlays/dev/kustomization.yaml",
			"REDIS_URL=redis://cph-rekey-redis:6379/0", "REDIS_URL=redis://redis:6379/0", `host "redis" is not a Service of the build`},
		{"KEDA watches another Redis", "overlays/dev/kustomization.yaml",
			"REDIS_ADDRESS=cph-rekey-redis:6379", "REDIS_ADDRESS=other-redis:6379", "is not the REDIS_URL host"},
		{"$(VAR) not in env", "overlays/dev/cphsim.yaml", "--ak=$(HUAWEICLOUD_SDK_AK)", "--ak=$(CPH_AK)", "expands $(CPH_AK)"},
		{"listed file missing", "overlays/dev/kustomization.yaml", "  - cphsim.yaml\n", "  - cphsim.yaml\n  - missing.yaml\n", "missing.yaml"},
		{"file listed nowhere", "base/kustomization.yaml", "  - pdb.yaml\n", "", "base/pdb.yaml: not listed"},
		{"compose worker misses cphsim", "docker-compose.yml",
			`"--endpoint", "http://cphsim:8081"`, `"--endpoint", "http://localhost:8081"`, "does not point at the cphsim service"},
		{"compose unknown field", "docker-compose.yml", "restart: unless-stopped\n\n  cphsim", "restart: unless-stopped\n    deploy_mode: x\n\n  cphsim", `unknown field "deploy_mode"`},
		{"compose Redis may evict", "docker-compose.yml", `"noeviction"`, `"volatile-lru"`, "--maxmemory-policy noeviction"},
		{"compose credentials differ", "docker-compose.yml", "--sk=dev-sk-not-a-secret", "--sk=other", "the simulator would refuse the worker"},
		{"Dockerfile root final stage", "Dockerfile", "static-debian12:nonroot\nCOPY --from=build /out/worker /out/enqueue /out/cphsim /usr/local/bin/\nUSER 65532:65532\n",
			"static-debian12\nCOPY --from=build /out/worker /out/enqueue /out/cphsim /usr/local/bin/\n", "runs as root"},
		{"Dockerfile USER root", "Dockerfile", "USER 65532:65532", "USER root", "runs as root"},
		{"Dockerfile misses a command", "Dockerfile", " ./cmd/cphsim", "", "does not build ./cmd/cphsim"},
		{"Dockerfile builds a command that does not exist", "Dockerfile", "./cmd/cphsim", "./cmd/cphsim ./cmd/nothere", "builds ./cmd/nothere"},
		{"Dockerfile with cgo", "Dockerfile", "CGO_ENABLED=0 ", "", "go build without CGO_ENABLED=0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyTree(t, ".")
			path := filepath.Join(dir, filepath.FromSlash(tt.file))
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(string(data), tt.old); n != 1 {
				t.Fatalf("%s: %q occurs %d times, want once (the mutation would not be what it says)", tt.file, tt.old, n)
			}
			if err := os.WriteFile(path, []byte(strings.Replace(string(data), tt.old, tt.new, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			errs := checkTree(dir, "..")
			if len(errs) == 0 {
				t.Fatalf("no problem found, want one containing %q", tt.wantError)
			}
			for _, err := range errs {
				if strings.Contains(err.Error(), tt.wantError) {
					return
				}
			}
			t.Errorf("no problem contains %q; got:\n%v", tt.wantError, errors.Join(errs...))
		})
	}
}

// copyTree copies the deploy tree at src (skipping Go files) into a
// temporary directory.
func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if filepath.Ext(path) == ".go" {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}
