package tasks

// Place is where a rotation's servers are: a region and a project. Each
// has its own endpoint, project id in the API's paths and quota; a
// rotation is in one place, and a rotation across several is a Group of
// rotations, one a place. The zero Place, and an empty field, are the
// worker's own region and project: rotations written before places
// existed are there.
type Place struct {
	Region    string `json:"region,omitempty"`
	ProjectID string `json:"project_id,omitempty"`
}

// IsZero reports whether p is the workers' default place.
func (p Place) IsZero() bool { return p == Place{} }

// String is "region/project", with "-" for what is the worker's default.
func (p Place) String() string {
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	return dash(p.Region) + "/" + dash(p.ProjectID)
}

// Places gives the API client and the limiter of each place a rotation
// is in: the endpoint of its region, its project id, the quotas of its
// region. It is called for every call the handlers make, so it caches
// what it builds.
type Places func(Place) (API, Limiter)

// Place is the region and project the rotation's servers are in.
func (r *Rotation) Place() Place { return Place{Region: r.Region, ProjectID: r.ProjectID} }

// apiOf is the API client of rot's place.
func (h *Handler) apiOf(rot *Rotation) API {
	api, _ := h.places(rot.Place())
	return api
}

// limiterOf is the limiter of rot's place.
func (h *Handler) limiterOf(rot *Rotation) Limiter {
	_, lim := h.places(rot.Place())
	return lim
}
