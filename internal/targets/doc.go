// Package targets turns the fleet list an operator hands to "enqueue start"
// into a validated []Target, or into an *InputError that lists every
// problem with its line (or JSON element), before anything is written
// anywhere.
//
// Three formats are accepted, and detected when the format is Auto: one
// server id per line, CSV with a header row naming server_id (and
// optionally keypair_name, region and project_id), and a JSON array of ids
// or of {"server_id":…,"keypair_name":…,"region":…,"project_id":…}
// objects. A target is a server in a (region, project): Read gives those
// that name none its Options' defaults.
//
//	ts, err := targets.Parse(os.Stdin, targets.Auto)
//	var ie *targets.InputError
//	if errors.As(err, &ie) {
//		fmt.Fprintln(os.Stderr, ie) // one problem per line
//		os.Exit(2)
//	}
//
// Input is streamed: parsing a million ids needs the result slice and a
// few bytes per id for the duplicate check, not a copy of the file.
package targets
