package admin

import (
	"bytes"
	"embed"
	"html/template"
	"io/fs"
	"net/http"
	"strconv"
	"strings"

	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// The console's page is one HTML shell; console.js draws it from the JSON
// API, so the page and tools see the same data. Everything it loads is
// embedded: it works where the browser has no internet.
//
//go:embed console
var consoleFS embed.FS

var consoleTmpl = template.Must(template.ParseFS(consoleFS, "console/index.html"))

// shell is what the page needs to know before its first API call.
type shell struct {
	Title    string
	Rotation string // "" on the list
	ReadOnly bool
	Console  string
	API      string
	UI       string
	Queues   []string
	Region   string // the workers' own region ("": not known)
}

func (s *Server) consoleRoutes(mux *http.ServeMux) {
	assets, _ := fs.Sub(consoleFS, "console")
	page := func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if id != "" {
			if err := tasks.ValidateRotationID(id); err != nil {
				http.Error(w, "no such rotation: "+err.Error(), http.StatusNotFound)
				return
			}
		}
		title := "Rotations · cph-rekey"
		if id != "" {
			title = id + " · cph-rekey"
		}
		var b bytes.Buffer
		if err := consoleTmpl.Execute(&b, shell{Title: title, Rotation: id, ReadOnly: s.opts.ReadOnly,
			Console: ConsolePath, API: APIPath, UI: UIPath,
			Queues: s.queues(), Region: s.opts.Region}); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
		w.Write(b.Bytes())
	}
	h := func(pattern string, hh http.Handler) {
		mux.Handle(pattern, s.protect(consoleHeaders(hh)))
	}
	h("GET "+ConsolePath+"/{$}", http.HandlerFunc(page))
	h("GET "+ConsolePath+"/{id}", http.HandlerFunc(page))
	h("GET "+ConsolePath+"/assets/", http.StripPrefix(ConsolePath+"/assets/", http.FileServerFS(assetsOnly{assets})))
	mux.Handle("GET "+ConsolePath, http.RedirectHandler(ConsolePath+"/", http.StatusMovedPermanently))
}

// queues are the console's deployment's queues, which it links to in the
// asynq UI.
func (s *Server) queues() []string {
	ns := tasks.Namespace(s.opts.Rotations.Namespace())
	return []string{ns.Queue(tasks.QueueSubmit), ns.Queue(tasks.QueuePoll), ns.Queue(tasks.QueueEvents)}
}

// assetsOnly serves the console's scripts and styles, not its template.
type assetsOnly struct{ fs.FS }

func (a assetsOnly) Open(name string) (fs.File, error) {
	if !strings.HasSuffix(name, ".js") && !strings.HasSuffix(name, ".css") {
		return nil, fs.ErrNotExist
	}
	return a.FS.Open(name)
}

// consoleHeaders are uiHeaders plus a content security policy that lets
// the page run only its own script and talk only to its own origin.
func consoleHeaders(h http.Handler) http.Handler {
	return uiHeaders(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy",
			"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		h.ServeHTTP(w, r)
	}))
}

// consoleLink is the link into the console that the asynq UI's pages get,
// so an operator looking at tasks is one click from the rotations.
const consoleLink = `<a href="` + ConsolePath + `/" style="position:fixed;right:16px;bottom:16px;z-index:2000;` +
	`padding:8px 14px;border-radius:18px;background:#1f6feb;color:#fff;font:500 14px system-ui,sans-serif;` +
	`text-decoration:none;box-shadow:0 2px 6px rgba(0,0,0,.3)">Rotations console</a>`

// withConsoleLink adds consoleLink to the asynq UI's HTML pages.
func withConsoleLink(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || strings.HasPrefix(r.URL.Path, UIPath+"/api/") {
			h.ServeHTTP(w, r)
			return
		}
		rec := &htmlRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		rec.flush()
	})
}

// htmlRecorder holds back an HTML answer to insert consoleLink before
// </body>; anything else passes straight through.
type htmlRecorder struct {
	http.ResponseWriter
	code    int
	decided bool
	html    bool
	buf     bytes.Buffer
}

func (h *htmlRecorder) WriteHeader(code int) {
	if h.decided {
		return
	}
	h.decided, h.code = true, code
	h.html = strings.HasPrefix(h.Header().Get("Content-Type"), "text/html")
	if !h.html {
		h.ResponseWriter.WriteHeader(code)
	}
}

func (h *htmlRecorder) Write(p []byte) (int, error) {
	if !h.decided {
		if h.Header().Get("Content-Type") == "" {
			h.Header().Set("Content-Type", http.DetectContentType(p))
		}
		h.WriteHeader(http.StatusOK)
	}
	if h.html {
		return h.buf.Write(p)
	}
	return h.ResponseWriter.Write(p)
}

func (h *htmlRecorder) flush() {
	if !h.html {
		return
	}
	body := h.buf.Bytes()
	if i := bytes.LastIndex(body, []byte("</body>")); i >= 0 {
		body = append(body[:i:i], append([]byte(consoleLink), body[i:]...)...)
	}
	h.Header().Del("Content-Length")
	h.Header().Set("Content-Length", strconv.Itoa(len(body)))
	h.ResponseWriter.WriteHeader(h.code)
	h.ResponseWriter.Write(body)
}
