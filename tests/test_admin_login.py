"""The admin login is throttled (django-axes): wrong passwords for one user from
one address lock that pair out for a while, the right password included, while
the same user elsewhere and other users from the same address still log in. Each
lockout is a WARNING line. (25 wrong passwords, then the right one, once got in.)"""
import pytest
from django.contrib.auth import get_user_model
from django.test import Client

pytestmark = pytest.mark.django_db

WRONG = {"username": "ops", "password": "wrong"}
RIGHT = {"username": "ops", "password": "correct horse battery staple"}


def login(data, address="198.51.100.7"):
    return Client(REMOTE_ADDR=address).post("/admin/login/?next=/admin/", data)


@pytest.fixture
def staff(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # the throttle is the subject
    User = get_user_model()
    User.objects.create_user("ops", password=RIGHT["password"], is_staff=True, is_superuser=True)
    User.objects.create_user("dev", password="another long password", is_staff=True, is_superuser=True)


def test_wrong_passwords_lock_that_user_at_that_address_out_and_the_right_one_too(staff, settings, caplog):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert login(WRONG).status_code == 200  # the form again, with its error
    locked = login(WRONG)
    assert locked.status_code == 429, locked.status_code
    assert login(RIGHT).status_code == 429
    assert login(RIGHT, address="203.0.113.9").status_code == 302  # the same user elsewhere
    assert login({"username": "dev", "password": "another long password"}).status_code == 302
    assert any(r.levelname == "WARNING" and "locking out" in r.getMessage().lower() for r in caplog.records)


def test_a_successful_login_before_the_limit_resets_the_count(staff, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        login(WRONG)
    assert login(RIGHT).status_code == 302
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert login(WRONG).status_code == 200
