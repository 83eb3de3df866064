"""The one error type handlers raise; the server turns it into the API's JSON error body."""


class ApiError(Exception):
    def __init__(self, status, error, msg, **extra):
        super().__init__(msg)
        self.status = status
        self.error = error
        self.msg = msg
        self.extra = extra

    def body(self):
        if self.error is None:  # rate-limit bodies are {"detail": ...} only
            return dict(self.extra)
        out = {"success": False, "error": self.error, "msg": self.msg}
        out.update(self.extra)
        return out
