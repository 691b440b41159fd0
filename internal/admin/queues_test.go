package admin

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// TestUIListsTheDeploymentsQueues: with another deployment's tasks in the
// same Redis, the asynq UI's dashboard lists only this deployment's
// queues, and their stats.
func TestUIListsTheDeploymentsQueues(t *testing.T) {
	rig := newConsoleRig(t, Options{})
	enq := asynq.NewClientFromRedisClient(rig.r.Client(t))
	for _, q := range []string{tasks.Namespace("blue").Queue(tasks.QueueSubmit), "default"} {
		if _, err := enq.Enqueue(asynq.NewTask("other", nil), asynq.Queue(q)); err != nil {
			t.Fatal(err)
		}
	}
	var list struct {
		Queues []struct {
			Queue string `json:"queue"`
		} `json:"queues"`
	}
	if code := getJSONAny(t, rig.base+UIPath+"/api/queues", &list); code != http.StatusOK {
		t.Fatalf("queues: %d", code)
	}
	var names []string
	for _, q := range list.Queues {
		names = append(names, q.Queue)
	}
	slices.Sort(names)
	if want := []string{tasks.QueueSubmit}; !slices.Equal(names, want) {
		t.Errorf("the asynq UI lists queues %v, want %v (the deployment's queues that exist)", names, want)
	}
	var stats struct {
		Stats map[string]json.RawMessage `json:"stats"`
	}
	if code := getJSONAny(t, rig.base+UIPath+"/api/queue_stats", &stats); code != http.StatusOK {
		t.Fatalf("queue stats: %d", code)
	}
	for q := range stats.Stats {
		if q != tasks.QueuePoll && q != tasks.QueueSubmit {
			t.Errorf("the asynq UI shows the stats of queue %s", q)
		}
	}
	if len(stats.Stats) == 0 {
		t.Errorf("the asynq UI shows no queue's stats")
	}
}

// getJSONAny decodes a JSON answer whatever its content type (asynqmon
// sets none).
func getJSONAny(t *testing.T, url string, v any) int {
	t.Helper()
	resp, body := do(t, "GET", url)
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: %v in %s", url, err, body)
	}
	return resp.StatusCode
}
