package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// TestNamespacesShareARedis runs two deployments on one Redis, each with
// its own namespace, fleet and worker processes (admin port on), and a
// rotation in each: both finish, each report agrees with its own fleet,
// and each deployment's `enqueue list`, console API and asynq web UI show
// only its own rotations and queues. Every key written is in one of the
// two namespaces, none in the default one.
func TestNamespacesShareARedis(t *testing.T) {
	r := testredis.Mini(t)
	type deployment struct {
		ns    tasks.Namespace
		fleet *fleet
		env   []string
		admin string
		id    string
	}
	deps := []*deployment{{ns: "blue"}, {ns: "green"}}
	for i, d := range deps {
		d.fleet = startSim(t, cphsim.Options{Servers: 300 + 100*i, Seed: uint64(21 + i), JobLatency: 300 * time.Millisecond,
			JobFailRate: 0.05, BadServerRate: 0.01})
		d.env = append(baseEnv(r, d.fleet), "REKEY_NAMESPACE="+string(d.ns))
		addr := freeAddr(t)
		startWorker(t, append(d.env, "REKEY_ADMIN_TOKEN="+adminToken), "--admin-addr", addr)
		startWorker(t, d.env)
		d.admin = "http://" + addr
		waitHTTP(t, d.admin+"/readyz")
	}
	for _, d := range deps {
		d.id = startRotation(t, d.env, writeTargets(t, d.fleet)).Rotation
	}
	if deps[0].id == deps[1].id {
		t.Fatalf("both rotations are %s: the test cannot tell them apart", deps[0].id)
	}

	rdb := r.Client(t)
	for _, d := range deps {
		store := tasks.NewStore(rdb, d.ns)
		deadline := time.Now().Add(2 * time.Minute)
		var rot *tasks.Rotation
		for {
			var err error
			if rot, err = store.Rotation(context.Background(), d.id); err != nil {
				t.Fatalf("namespace %s: %v", d.ns, err)
			}
			if rot.Finished() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("namespace %s: rotation %s not finished after 2m: %+v", d.ns, d.id, rot.Counts)
			}
			time.Sleep(250 * time.Millisecond)
		}
		checkReport(t, d.fleet, report(t, d.env, d.id), rot)
	}

	for i, d := range deps {
		other := deps[1-i]
		var list []struct {
			Rotation string `json:"rotation"`
		}
		if err := json.Unmarshal([]byte(enqueue(t, d.env, "list", "--json")), &list); err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 || list[0].Rotation != d.id {
			t.Errorf("namespace %s: enqueue list shows %+v, want only %s", d.ns, list, d.id)
		}
		if _, code, _ := enqueueCode(t, d.env, "status", other.id); code != 2 {
			t.Errorf("namespace %s: enqueue status of %s's rotation exits %d, want 2 (not found)", d.ns, other.ns, code)
		}

		code, body := get(t, d.admin+"/api/v1/rotations")
		var api struct {
			Rotations []struct {
				ID    string `json:"id"`
				State string `json:"state"`
			} `json:"rotations"`
			Total int `json:"total"`
		}
		if err := json.Unmarshal([]byte(body), &api); code != http.StatusOK || err != nil {
			t.Fatalf("namespace %s: console API: %d %v %s", d.ns, code, err, body)
		}
		if api.Total != 1 || len(api.Rotations) != 1 || api.Rotations[0].ID != d.id {
			t.Errorf("namespace %s: the console lists %+v, want only %s", d.ns, api, d.id)
		}
		if code, _ := get(t, d.admin+"/api/v1/rotations/"+other.id); code != http.StatusNotFound {
			t.Errorf("namespace %s: the console shows %s's rotation: %d", d.ns, other.ns, code)
		}

		// asynq's web UI lists the deployment's queues under their
		// namespaced names, and only those.
		code, body = get(t, d.admin+"/monitoring/api/queues")
		var queues struct {
			Queues []struct {
				Queue string `json:"queue"`
			} `json:"queues"`
		}
		if err := json.Unmarshal([]byte(body), &queues); code != http.StatusOK || err != nil {
			t.Fatalf("namespace %s: asynq UI queues: %d %v %s", d.ns, code, err, body)
		}
		var names []string
		for _, q := range queues.Queues {
			names = append(names, q.Queue)
		}
		want := d.ns.Queue(tasks.QueueSubmit)
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Errorf("namespace %s: the asynq UI lists queues %v, without %s", d.ns, names, want)
		}
		for _, q := range names {
			if !strings.HasPrefix(q, string(d.ns)+".") {
				t.Errorf("namespace %s: the asynq UI lists %s, another deployment's queue", d.ns, q)
			}
		}
		// The UI's page of a namespaced queue (its name has a '.') answers.
		if code, body := get(t, d.admin+"/monitoring/api/queues/"+want); code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("namespace %s: the asynq UI's queue %s: %d %s", d.ns, want, code, tail(body, 300))
		}
	}

	// The default namespace sees neither rotation, and holds no key.
	if out := enqueue(t, baseEnv(r, deps[0].fleet), "list", "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("the default namespace lists %s, want no rotation", out)
	}
	for _, k := range r.Mini.Keys() {
		if strings.HasPrefix(k, "cph-rekey:") || strings.HasPrefix(k, "cph-rekey") &&
			!strings.HasPrefix(k, "cph-rekey.blue:") && !strings.HasPrefix(k, "cph-rekey.green:") {
			t.Errorf("key %q is in neither deployment's namespace", k)
		}
	}
}
