# One image for every role: router, regional web server, orchestrator worker, agent.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DJANGO_SETTINGS_MODULE=project.settings
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
# The admin's static files, hashed and compressed, served by the web process (WhiteNoise).
RUN python manage.py collectstatic --noinput -v0
RUN useradd --create-home meridian && mkdir -p /app/var /app/staticfiles && chown -R meridian /app/var /app/staticfiles
USER meridian
EXPOSE 8000
# The web server (both roles); its settings are in project/gunicorn_conf.py.
CMD ["gunicorn", "-c", "project/gunicorn_conf.py", "-b", "0.0.0.0:8000", "-w", "4"]
