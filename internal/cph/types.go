package cph

// ServerKeypair is one entry of an UpdateKeypair request.
type ServerKeypair struct {
	ServerID    string `json:"server_id"`
	KeypairName string `json:"keypair_name"`
}

// ServerJob is the per-server answer of UpdateKeypair: a JobID when the job
// was created, or ErrorCode/ErrorMsg (and usually no JobID) when the server
// was rejected inside an otherwise successful (HTTP 200) response.
type ServerJob struct {
	ServerID  string `json:"server_id"`
	JobID     string `json:"job_id"`
	ErrorCode string `json:"error_code"`
	ErrorMsg  string `json:"error_msg"`
}

// Failed reports whether the server was rejected instead of given a job.
func (j ServerJob) Failed() bool { return j.ErrorCode != "" || j.JobID == "" }

// UpdateKeypairResponse is the answer of UpdateKeypair.
type UpdateKeypairResponse struct {
	RequestID string      `json:"request_id"`
	Jobs      []ServerJob `json:"jobs"`
}

// JobStatus is the state of an asynchronous CPH job.
type JobStatus int

// Documented job states. Any other value is treated as still running.
const (
	JobFailed    JobStatus = -1
	JobRunning   JobStatus = 1
	JobSucceeded JobStatus = 2
)

// Done reports whether the job has ended, successfully or not.
func (s JobStatus) Done() bool { return s == JobSucceeded || s == JobFailed }

// Job is a CPH asynchronous job as returned by ShowJob and ListJobs.
type Job struct {
	RequestID  string    `json:"request_id"`
	JobID      string    `json:"job_id"`
	ServerID   string    `json:"server_id"`
	PhoneID    string    `json:"phone_id"`
	NodeID     string    `json:"node_id"`
	Status     JobStatus `json:"status"`
	BeginTime  string    `json:"begin_time"`
	EndTime    string    `json:"end_time"`
	ErrorCode  string    `json:"error_code"`
	ErrorMsg   string    `json:"error_msg"`
	ExecuteMsg string    `json:"execute_msg"`
}

// ListJobsResponse is one page of ListJobs. It carries no total count: a
// short page is the last one.
type ListJobsResponse struct {
	RequestID string `json:"request_id"`
	Jobs      []Job  `json:"jobs"`
}

// Server status values (ListCloudPhoneServers "status").
const (
	ServerStatusAbnormal = 2
	ServerStatusNormal   = 5
	ServerStatusFrozen   = 8
	ServerStatusShutdown = 10
)

// Server is a cloud phone server as listed by ListCloudPhoneServers and
// ShowCloudPhoneServerDetail (the fields a rotation uses).
type Server struct {
	ServerID            string `json:"server_id"`
	ServerName          string `json:"server_name"`
	KeypairName         string `json:"keypair_name"`
	Status              int    `json:"status"`
	AvailabilityZone    string `json:"availability_zone"`
	ServerModelName     string `json:"server_model_name"`
	PhoneModelName      string `json:"phone_model_name"`
	NetworkVersion      string `json:"network_version"`
	EnterpriseProjectID string `json:"enterprise_project_id"`
	CreateTime          string `json:"create_time"`
	UpdateTime          string `json:"update_time"`
}

// ListServersResponse is one page of ListCloudPhoneServers; Count is the
// total number of matching servers.
type ListServersResponse struct {
	RequestID string   `json:"request_id"`
	Count     int      `json:"count"`
	Servers   []Server `json:"servers"`
}

// ErrorBody is the JSON body of a failed CPH or API gateway request.
type ErrorBody struct {
	RequestID string `json:"request_id,omitempty"`
	ErrorCode string `json:"error_code"`
	ErrorMsg  string `json:"error_msg"`
}
