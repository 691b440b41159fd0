package admin

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
)

// onlyQueues narrows the asynq UI's lists of queues (its dashboard's
// queues and their daily stats) to queues: asynqmon lists every queue in
// the Redis, and deployments of other namespaces sharing it are theirs to
// show. A queue's own pages stay reachable by name.
func onlyQueues(h http.Handler, queues []string) http.Handler {
	keep := map[string]bool{}
	for _, q := range queues {
		keep[q] = true
	}
	filters := map[string]func([]byte) ([]byte, error){
		UIPath + "/api/queues":      func(b []byte) ([]byte, error) { return filterQueueList(b, keep) },
		UIPath + "/api/queue_stats": func(b []byte) ([]byte, error) { return filterQueueStats(b, keep) },
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		filter := filters[r.URL.Path]
		if r.Method != http.MethodGet || filter == nil {
			h.ServeHTTP(w, r)
			return
		}
		rec := &bufferedResponse{header: http.Header{}, code: http.StatusOK}
		h.ServeHTTP(rec, r)
		body := rec.body.Bytes()
		if rec.code == http.StatusOK {
			var err error
			if body, err = filter(body); err != nil {
				http.Error(w, "asynq UI: "+err.Error(), http.StatusInternalServerError)
				return
			}
		}
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(rec.code)
		w.Write(body)
	})
}

// filterQueueList keeps the queues of {"queues": [{"queue": name, …}, …]}
// named in keep.
func filterQueueList(body []byte, keep map[string]bool) ([]byte, error) {
	var list struct {
		Queues []json.RawMessage `json:"queues"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, err
	}
	kept := []json.RawMessage{} // the UI wants a list, never null
	for _, q := range list.Queues {
		var name struct {
			Queue string `json:"queue"`
		}
		if err := json.Unmarshal(q, &name); err != nil {
			return nil, err
		}
		if keep[name.Queue] {
			kept = append(kept, q)
		}
	}
	return json.Marshal(map[string]any{"queues": kept})
}

// filterQueueStats keeps the queues of {"stats": {name: […], …}} named in
// keep.
func filterQueueStats(body []byte, keep map[string]bool) ([]byte, error) {
	var stats struct {
		Stats map[string]json.RawMessage `json:"stats"`
	}
	if err := json.Unmarshal(body, &stats); err != nil {
		return nil, err
	}
	for q := range stats.Stats {
		if !keep[q] {
			delete(stats.Stats, q)
		}
	}
	if stats.Stats == nil {
		stats.Stats = map[string]json.RawMessage{}
	}
	return json.Marshal(stats)
}

// bufferedResponse holds an answer back for onlyQueues to filter.
type bufferedResponse struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header         { return b.header }
func (b *bufferedResponse) WriteHeader(code int)        { b.code = code }
func (b *bufferedResponse) Write(p []byte) (int, error) { return b.body.Write(p) }
