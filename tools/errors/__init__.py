"""Every way a tool call can end without an answer, and the one place their sentences are written.

```
CallError                         kind          retryable
├── ArgumentError                 invalid_arguments no (caught before anything is sent)
├── ConfigError                   config        no   (no API key set)
├── BudgetError                   budget        no   (the token budget is spent)
├── StatusError                                      (the upstream answered an error status)
│   ├── BadRequestError           bad_request   no   400, 422
│   ├── AuthError                 auth          no   401, 403
│   ├── PaymentError              payment       no   402
│   ├── NotFoundError             not_found     no   404
│   ├── RateLimitedError          rate_limited  yes  429
│   └── ServerError               upstream      502/503/504 yes; 500 and others no
├── DeadlineError                 timeout       no   (the call's deadline passed)
├── NetworkError                  network       only when the request never left
├── BadResponseError              bad_response  no   (not JSON, no choices, null content, broken stream)
├── CallCancelledError            cancelled     no   (cancel_job, or the server shut down under the call)
├── UnknownJobError               unknown_job   no   (get_result/cancel_job with an id it does not know)
└── InstanceLostError             instance_lost yes  (the instance sharing Redis that ran the job stopped)
```

`ask_both` fails only when every provider does; that failure is of kind `all_failed` and lists each.

Three modules: `tree` the classes (what a failure is), `sentences` one function per failure that
writes its sentence and returns the error, `reading` what an upstream said (clipped, keys removed).
`sentences.status_error()` is the only mapping from an HTTP status to a class. `CallError.sentence`
is the only text a person sees; it never includes a request body, a traceback or an API key (every
error leaving `Upstream` has been through `CallError.redact` with all configured keys).
"""
