{{/* Names and labels. */}}
{{- define "recsys-audit.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 30 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 30 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "recsys-audit.serviceAccountName" -}}
{{- default (include "recsys-audit.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "recsys-audit.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "recsys-audit.image" -}}
{{- $image := .Values.image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The pod that audits one environment; called with (dict "root" $ "env" $env "hook" true|false).
Container paths: params at /etc/recsys-audit, the writable work dir (HOME, runs before upload) at /work, /tmp.
*/}}
{{- define "recsys-audit.podTemplate" -}}
{{- $root := .root -}}
{{- $env := .env -}}
{{- $values := $root.Values -}}
metadata:
  labels:
    {{- include "recsys-audit.labels" $root | nindent 4 }}
    app.kubernetes.io/component: audit
    recsys-audit/environment: {{ $env.name }}
    {{- with $values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $values.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  restartPolicy: Never
  serviceAccountName: {{ include "recsys-audit.serviceAccountName" $root }}
  automountServiceAccountToken: false
  enableServiceLinks: false
  securityContext:
    runAsNonRoot: true
    runAsUser: {{ $values.runAsUser }}
    runAsGroup: {{ $values.runAsGroup }}
    fsGroup: {{ $values.runAsGroup }}
    seccompProfile:
      type: RuntimeDefault
  {{- with $values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: audit
      image: {{ include "recsys-audit.image" $root | quote }}
      imagePullPolicy: {{ $values.image.pullPolicy }}
      args:
        - run
        - /etc/recsys-audit/params.yaml
        - --out
        - {{ required "storage.url: give the S3 location of the archive, s3://BUCKET/PREFIX" $values.storage.url | quote }}
        - --work-dir
        - /work/audits
        - --trigger
        - $(RECSYS_AUDIT_TRIGGER)
        {{- if $env.deployedVersion }}
        - --deployed-version
        - $(RECSYS_AUDIT_DEPLOYED_VERSION)
        {{- end }}
        {{- if $env.sections }}
        - --sections
        - {{ join "," $env.sections | quote }}
        {{- end }}
      env:
        - name: RECSYS_AUDIT_TRIGGER  # the Job's name: the same for every retry of one Job
          valueFrom:
            fieldRef:
              fieldPath: metadata.labels['batch.kubernetes.io/job-name']
        {{- if $env.deployedVersion }}
        - name: RECSYS_AUDIT_DEPLOYED_VERSION
          value: {{ $env.deployedVersion | quote }}
        {{- end }}
        - name: HOME
          value: /work
        - name: TMPDIR
          value: /tmp
        {{- with $values.storage.region }}
        - name: AWS_REGION
          value: {{ . | quote }}
        {{- end }}
        {{- with $values.storage.endpoint }}
        - name: AWS_ENDPOINT_URL_S3
          value: {{ . | quote }}
        {{- end }}
        {{- if $values.storage.pathStyle }}
        - name: AWS_CONFIG_FILE
          value: /etc/recsys-audit/aws-config
        {{- end }}
        {{- with $values.storage.credentialsSecret }}
        - name: AWS_ACCESS_KEY_ID
          valueFrom:
            secretKeyRef: {name: {{ . | quote }}, key: AWS_ACCESS_KEY_ID}
        - name: AWS_SECRET_ACCESS_KEY
          valueFrom:
            secretKeyRef: {name: {{ . | quote }}, key: AWS_SECRET_ACCESS_KEY}
        {{- end }}
        {{- range $env.secretEnv }}
        - name: {{ .name }}
          valueFrom:
            secretKeyRef:
              name: {{ .secretKeyRef.name | quote }}
              key: {{ .secretKeyRef.key | quote }}
        {{- end }}
      securityContext:
        runAsNonRoot: true
        runAsUser: {{ $values.runAsUser }}
        runAsGroup: {{ $values.runAsGroup }}
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        privileged: false
        capabilities:
          drop: [ALL]
        seccompProfile:
          type: RuntimeDefault
      resources:
        {{- toYaml $values.resources | nindent 8 }}
      volumeMounts:
        - name: params
          mountPath: /etc/recsys-audit
          readOnly: true
        - name: work
          mountPath: /work
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: params
      configMap:
        name: {{ printf "%s-%s" (include "recsys-audit.fullname" $root) $env.name }}
    - name: work
      emptyDir:
        sizeLimit: {{ $values.workDirSizeLimit }}
    - name: tmp
      emptyDir:
        medium: Memory
        sizeLimit: 64Mi
  {{- with $values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* The Job spec around the pod: retries only for crashes and failed uploads, never for a judged audit. */}}
{{- define "recsys-audit.jobSpec" -}}
{{- $values := .root.Values -}}
backoffLimit: {{ $values.backoffLimit }}
activeDeadlineSeconds: {{ $values.activeDeadlineSeconds }}
ttlSecondsAfterFinished: {{ $values.ttlSecondsAfterFinished }}
podFailurePolicy:
  rules:
    - action: FailJob  # 1 fail, 2 bad params, 3 incomplete, 4 partial: the audit ran (or cannot); a retry changes nothing
      onExitCodes:
        containerName: audit
        operator: In
        values: [1, 2, 3, 4]
    - action: Ignore  # evicted or preempted: retry without counting it
      onPodConditions:
        - type: DisruptionTarget
          status: "True"
template:
  {{- include "recsys-audit.podTemplate" . | nindent 2 }}
{{- end -}}
