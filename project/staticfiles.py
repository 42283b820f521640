"""Which apps' static files collectstatic gathers."""
from django.contrib.staticfiles import finders

# Swagger UI is served by a view of its own behind the docs' credential
# (project.schema.DocsAssetView), and the browsable API is off (JSON renderers only):
# 32 MB that collectstatic would copy, hash and compress for nothing.
NOT_COLLECTED = ("drf_spectacular_sidecar", "rest_framework")


class AppDirectoriesFinder(finders.AppDirectoriesFinder):
    def __init__(self, app_names=None, *args, **kwargs):
        super().__init__(app_names, *args, **kwargs)
        for name in NOT_COLLECTED:
            if name in self.storages:
                self.apps.remove(name)
                del self.storages[name]
