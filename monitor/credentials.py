"""Credentials per target: a profile, the ambient chain, or an assumed role.

A target with only a ``profile`` (or nothing) gets an ordinary session, so
everything botocore's shared config supports works: SSO, credential_process,
source_profile chains, instance roles. A target with a ``role_arn`` assumes
that role through STS with the profile's (or ambient) credentials, and
botocore's refreshable credentials renew it before it expires, from inside
the next request, so polls are never interrupted by a refresh.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import aioboto3
from aiobotocore.credentials import (
    AioAssumeRoleCredentialFetcher,
    AioDeferredRefreshableCredentials,
)
from aiobotocore.session import AioSession
from botocore.credentials import CredentialProvider

from monitor.config import ALL_REGIONS, Target


def session_for(target: Target) -> aioboto3.Session:
    """The aioboto3 session whose clients poll ``target``'s regions."""
    if target.role_arn is None:
        return aioboto3.Session(profile_name=target.profile)

    source = AioSession(profile=target.profile)
    extra: dict[str, Any] = {
        "RoleSessionName": target.role_session_name,
        "DurationSeconds": round(target.role_duration),
    }
    if target.external_id is not None:
        extra["ExternalId"] = target.external_id

    # Regional STS, in the target's first region: AWS recommends it over the
    # global endpoint, and it keeps working if another region has trouble.
    region = target.regions[0] if target.regions[0] != ALL_REGIONS else "us-east-1"
    fetcher = AioAssumeRoleCredentialFetcher(
        client_creator=partial(source.create_client, region_name=region),
        source_credentials=_SourceCredentials(source),
        role_arn=target.role_arn,
        extra_args=extra,
    )
    assumed = AioDeferredRefreshableCredentials(
        refresh_using=fetcher.fetch_credentials, method="assume-role"
    )

    # Put the role first in the session's own resolver chain, the hook
    # botocore offers for this, rather than setting private attributes.
    session = AioSession()
    session.get_component("credential_provider").insert_before("env", _Fixed(assumed))
    return aioboto3.Session(botocore_session=session)


class _SourceCredentials:
    """The credentials the role is assumed with, resolved when first needed.

    Resolving at fetch time, not at start-up, lets a profile's SSO token or
    credential_process run inside the event loop like any other request.
    """

    def __init__(self, session: AioSession) -> None:
        self._session = session

    async def get_frozen_credentials(self) -> Any:
        credentials = await self._session.get_credentials()
        if credentials is None:
            raise RuntimeError("no credentials to assume the role with")
        return await credentials.get_frozen_credentials()


class _Fixed(CredentialProvider):  # type: ignore[misc]
    METHOD = "assume-role"
    CANONICAL_NAME = "ec2-import-monitor-assume-role"

    def __init__(self, credentials: AioDeferredRefreshableCredentials) -> None:
        super().__init__()
        self._credentials = credentials

    async def load(self) -> AioDeferredRefreshableCredentials:
        return self._credentials
